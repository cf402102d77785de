/**
 * The local worker processes, driven with fake processes: arguments and GPU pinning, the secret
 * each child gets (in its environment, not on its command line) and how it is recognised,
 * replacements and their budget, which exits are reported, and stopping.
 */
import assert from 'node:assert/strict';
import type { SpawnOptions } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import { after, test } from 'node:test';
import { Launcher, type LauncherOptions, type WorkerProcess } from '../src/coordinator/launcher.js';
import { WORKER_SECRET_ENV } from '../src/protocol/messages.js';

class FakeProcess extends EventEmitter {
  exitCode: number | null = null;
  signalCode: NodeJS.Signals | null = null;
  readonly stdout = new PassThrough();
  readonly signals: string[] = [];
  /** Exits when signalled (SIGKILL always; others unless `stubborn`). */
  stubborn = false;
  constructor(
    readonly pid: number,
    readonly args: string[],
    readonly options: SpawnOptions,
  ) {
    super();
  }
  kill(signal: NodeJS.Signals = 'SIGTERM'): boolean {
    if (this.exitCode !== null || this.signalCode !== null) return false;
    this.signals.push(signal);
    if (signal === 'SIGKILL' || !this.stubborn) setImmediate(() => this.exit(null, signal));
    return true;
  }
  exit(code: number | null, signal: NodeJS.Signals | null = null): void {
    if (this.exitCode !== null || this.signalCode !== null) return;
    this.exitCode = code;
    this.signalCode = signal;
    this.emit('exit', code, signal);
  }
  get secret(): string | undefined {
    return (this.options.env as NodeJS.ProcessEnv | undefined)?.[WORKER_SECRET_ENV];
  }
}

interface Harness {
  launcher: Launcher;
  procs: FakeProcess[];
  exits: Array<[number, number | undefined, string]>;
  output: Array<[number | undefined, string]>;
}

function harness(opts: Partial<LauncherOptions> = {}): Harness {
  const procs: FakeProcess[] = [];
  const exits: Harness['exits'] = [];
  const output: Harness['output'] = [];
  const launcher = new Launcher({
    endpoint: 'tcp://0.0.0.0:5555',
    workers: 2,
    gpus: 0,
    noCuda: false,
    onExit: (local, pid, how) => exits.push([local, pid, how]),
    onOutput: (pid, line) => output.push([pid, line]),
    spawn: (_command, args, options) => {
      const p = new FakeProcess(4000 + procs.length, args, options);
      procs.push(p);
      return p as unknown as WorkerProcess;
    },
    ...opts,
  });
  return { launcher, procs, exits, output };
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

// The launcher's grace timer does not hold the process open (a coordinator must be free to exit): this does, while the tests wait on it.
const keepAlive = setInterval(() => {}, 1000);
after(() => clearInterval(keepAlive));

test('arguments: the loopback address, GPU pinning round-robin, an engine, keys, extra flags', () => {
  const { launcher } = harness({ gpus: 2, keysDir: '/k', workerArgs: ['--connect-timeout', '9'] });
  assert.deepEqual(launcher.argsFor(0), ['--connect', 'tcp://127.0.0.1:5555', '--gpu', '0', '--keys', '/k', '--connect-timeout', '9']);
  assert.deepEqual(launcher.argsFor(3), ['--connect', 'tcp://127.0.0.1:5555', '--gpu', '1', '--keys', '/k', '--connect-timeout', '9']);
  assert.deepEqual(harness({ gpus: 2, engine: 'wasm', noCuda: true }).launcher.argsFor(1), ['--connect', 'tcp://127.0.0.1:5555', '--no-cuda', '--engine', 'wasm']);
  assert.deepEqual(harness({ engine: 'auto' }).launcher.argsFor(0), ['--connect', 'tcp://127.0.0.1:5555']);
});

test('each child gets its own secret in its environment, never on its command line; the secret identifies it', () => {
  const { launcher, procs } = harness();
  const a = launcher.start(0);
  const b = launcher.start(1);
  const [pa, pb] = procs;
  assert.match(pa.secret ?? '', /^[0-9a-f]{48}$/);
  assert.notEqual(pa.secret, pb.secret);
  for (const p of procs) assert.ok(!p.args.some((arg) => arg.includes(p.secret!)), 'the secret is not an argument');
  assert.equal((pa.options.env as NodeJS.ProcessEnv).PATH, process.env.PATH, 'the rest of the environment is inherited');
  assert.equal(pa.options.detached, true, 'its own process group');
  assert.equal(launcher.identify(pa.secret), a);
  assert.equal(launcher.identify(pb.secret), b);
  assert.equal(launcher.pid(a), pa.pid);
});

test("a hello with a child's pid but no secret, or a wrong one, is not taken as the child", () => {
  const { launcher, procs } = harness();
  launcher.start(0);
  const secret = procs[0].secret!;
  assert.equal(launcher.identify(undefined), undefined);
  assert.equal(launcher.identify(String(procs[0].pid)), undefined);
  assert.equal(launcher.identify(''), undefined);
  assert.equal(launcher.identify(secret.slice(0, 40)), undefined, 'a prefix is not the secret');
  assert.equal(launcher.identify(`${secret.slice(0, 47)}${secret[47] === '0' ? '1' : '0'}`), undefined, 'one digit off');
});

test('an unexpected exit is reported with how it ended; a dead child\'s secret no longer identifies it', async () => {
  const { launcher, procs, exits } = harness();
  const a = launcher.start(0);
  const b = launcher.start(1);
  procs[0].exit(3);
  procs[1].exit(null, 'SIGKILL');
  assert.deepEqual(exits, [
    [a, 4000, 'exited with status 3'],
    [b, 4001, 'killed by SIGKILL'],
  ]);
  assert.equal(launcher.identify(procs[0].secret), undefined);
  assert.equal(launcher.running, 0);
  await tick();
});

test('replace: kills a live child without reporting its exit, and starts one in its place (same GPU)', async () => {
  const { launcher, procs, exits } = harness({ gpus: 4, workers: 4 });
  launcher.start(0);
  const second = launcher.start(1);
  const r = launcher.replace(second);
  assert.equal(r.kind, 'started');
  assert.deepEqual(procs[1].signals, ['SIGKILL']);
  assert.equal(procs.length, 3);
  assert.deepEqual(procs[2].args.slice(-2), ['--gpu', '1'], 'the replacement takes the lost one\'s GPU');
  assert.equal(r.kind === 'started' && r.restarts, 1);
  await tick();
  assert.deepEqual(exits, [], 'the replaced child\'s exit is not reported: it was counted once already');
  // A child that exited on its own (reported) is replaced in its slot too.
  procs[2].exit(1);
  assert.equal(exits.length, 1);
  const again = launcher.replace(exits[0][0]);
  assert.equal(again.kind === 'started' && again.restarts, 2);
  assert.deepEqual(procs[3].args.slice(-2), ['--gpu', '1']);
  assert.equal(launcher.running, 2);
});

test('the restart budget: 3 per worker plus 3, then no more', () => {
  const { launcher, procs } = harness({ workers: 1 });
  let local = launcher.start(0);
  for (let i = 1; i <= 6; i++) {
    const r = launcher.replace(local);
    assert.equal(r.kind, 'started', `restart ${i}`);
    if (r.kind === 'started') local = r.local;
  }
  assert.deepEqual(launcher.replace(local), { kind: 'refused', reason: 'too many worker restarts; not starting another' });
  assert.equal(procs.length, 7);
});

test('closing: exits are expected (none reported), nothing is replaced, stop waits then kills', async () => {
  const { launcher, procs, exits } = harness();
  const a = launcher.start(0);
  launcher.start(1);
  procs[1].stubborn = true;
  launcher.beginClose();
  assert.deepEqual(launcher.replace(a), { kind: 'closing' });
  assert.deepEqual(procs[0].signals, ['SIGKILL'], 'a lost child is still killed');
  assert.equal(procs.length, 2, 'but not replaced');
  // The first exits when asked (by its shutdown message); the second ignores it and is killed after the grace period.
  const started = Date.now();
  await launcher.stop(200);
  assert.ok(Date.now() - started >= 150, 'waited for the grace period');
  assert.deepEqual(procs[1].signals, ['SIGKILL']);
  assert.equal(launcher.running, 0);
  assert.deepEqual(exits, []);
});

test('stop returns at once when every child has exited', async () => {
  const { launcher, procs } = harness();
  launcher.start(0);
  setTimeout(() => procs[0].exit(0), 20);
  const started = Date.now();
  await launcher.stop(5000);
  assert.ok(Date.now() - started < 2000);
  assert.deepEqual(procs[0].signals, []);
});

test('a child\'s stdout comes out line by line with its pid', async () => {
  const { launcher, procs, output } = harness();
  launcher.start(0);
  procs[0].stdout.write('joined: training net\nsecond line\n\n');
  await tick();
  assert.deepEqual(output, [
    [4000, 'joined: training net'],
    [4000, 'second line'],
  ]);
  launcher.killAllNow();
  assert.deepEqual(procs[0].signals, ['SIGKILL']);
});
