/**
 * Workers rejoin: a worker whose coordinator vanished says hello again, and a coordinator resumed
 * on the same address gathers it; the run ends with the weights of an undisturbed one.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { COORDINATOR, referenceRun, WORKER, readJson, runCli, tempDir, waitFor, freePort, workerIdentity } from './helpers.js';

/** What a worker of this build says of itself in its hello (a coordinator refuses a hello without it). */
const identity = await workerIdentity();

const RUN = ['--epochs', '1', '--train-limit', '1280', '--test-limit', '200', '--deterministic', '--checkpoint-every', '2', '--log-interval', '1', '--worker-timeout', '2'];

/**
 * A coordinator that spawns nothing and waits up to 60 s for a lost worker, and one worker started on
 * its own (as on another machine); their output gathered as it comes.
 */
/**
 * What each test starts from: the weights of an undisturbed run (`--workers 0`, the same flags), a free
 * address for the coordinator and the folder its run goes to.
 */
async function prepareRun(): Promise<{ undisturbed: string; listen: string; out: string }> {
  const dir = tempDir();
  const undisturbed = (await referenceRun(RUN, dir)).weights_sha256 as string;
  return { undisturbed, listen: `tcp://127.0.0.1:${await freePort()}`, out: join(dir, 'run') };
}

function startWaitingRun(listen: string, out: string): { worker: ChildProcess; exited: Promise<number | null>; log: { stdout: string; stderr: string; worker: string } } {
  const log = { stdout: '', stderr: '', worker: '' };
  const coordinator = spawn(process.execPath, [COORDINATOR, ...RUN, '--workers', '1', '--no-spawn', '--listen', listen, '--empty-pool-timeout', '60', '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
  coordinator.stdout.on('data', (d: Buffer) => (log.stdout += d));
  coordinator.stderr.on('data', (d: Buffer) => (log.stderr += d));
  const exited = new Promise<number | null>((r) => coordinator.on('exit', (code) => r(code)));
  const worker = spawn(process.execPath, [WORKER, '--connect', listen, '--connect-timeout', '60'], { stdio: ['ignore', 'pipe', 'pipe'] });
  worker.stdout.on('data', (d: Buffer) => (log.worker += d));
  worker.stderr.on('data', (d: Buffer) => (log.worker += d));
  return { worker, exited, log };
}

test('a coordinator killed and resumed on the same address gathers its live worker again: the undisturbed weights', async () => {
  const { undisturbed, listen, out } = await prepareRun();
  const first = spawn(process.execPath, [COORDINATOR, ...RUN, '--workers', '1', '--no-spawn', '--listen', listen, '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
  let firstOut = '';
  first.stdout.on('data', (d: Buffer) => (firstOut += d));
  // One worker, started on its own, as on another machine.
  const worker = spawn(process.execPath, [WORKER, '--connect', listen, '--connect-timeout', '60'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let workerLog = '';
  worker.stdout.on('data', (d: Buffer) => (workerLog += d));
  worker.stderr.on('data', (d: Buffer) => (workerLog += d));
  let workerExit: number | null | undefined;
  worker.on('exit', (code) => (workerExit = code));

  assert.ok(await waitFor(() => /Train Epoch: 1 \[384\//.test(firstOut), 60_000), firstOut);
  first.kill('SIGKILL');
  await new Promise((r) => first.on('exit', r));

  // The same address, resumed; the worker was never restarted.
  const resumed = await runCli(COORDINATOR, ['--resume', '--workers', '1', '--no-spawn', '--listen', listen, '--out', out], { timeoutMs: 120_000 });
  assert.equal(resumed.code, 0, resumed.stdout + resumed.stderr);
  assert.match(workerLog, /saying hello again/);
  assert.match(workerLog, /rejoined the coordinator/);
  assert.ok(await waitFor(() => workerExit !== undefined, 15_000), 'the worker leaves when the run is done');
  assert.equal(workerExit, 0, workerLog);
  assert.equal(readJson(join(out, 'summary.json')).weights_sha256, undisturbed);
});

test('a worker dropped for silence comes back on its own and is admitted; --empty-pool-timeout keeps the run waiting for it', async () => {
  const { undisturbed, listen, out } = await prepareRun();
  const { worker, exited, log } = startWaitingRun(listen, out);
  assert.ok(await waitFor(() => /Train Epoch: 1 \[64\//.test(log.stdout), 30_000), log.stdout + log.worker);
  // A partition, as the coordinator sees it: the only worker falls silent past --worker-timeout.
  worker.kill('SIGSTOP');
  assert.ok(await waitFor(() => /no worker left/.test(log.stderr), 15_000), log.stderr);
  worker.kill('SIGCONT');

  const code = await exited;
  assert.equal(code, 0, log.stdout + log.stderr);
  assert.match(log.stderr, /lost worker .*: silent for/);
  assert.match(log.stderr, /no worker left; waiting up to 60 s/);
  assert.match(log.worker, /rejoined the coordinator/);
  const summary = readJson(join(out, 'summary.json'));
  assert.equal(summary.weights_sha256, undisturbed);
  assert.ok(await waitFor(() => worker.exitCode !== null, 15_000));
  assert.equal(worker.exitCode, 0, log.worker);
});

test('SIGTERM with no worker left checkpoints and exits 143 at once; --resume ends with the undisturbed weights', async () => {
  const { undisturbed, listen, out } = await prepareRun();
  const coordinator = spawn(process.execPath, [COORDINATOR, ...RUN, '--workers', '1', '--no-spawn', '--listen', listen, '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  coordinator.stdout.on('data', (d: Buffer) => (stdout += d));
  coordinator.stderr.on('data', (d: Buffer) => (stderr += d));
  const exited = new Promise<number | null>((r) => coordinator.on('exit', (code) => r(code)));
  const worker = spawn(process.execPath, [WORKER, '--connect', listen], { stdio: 'ignore' });
  assert.ok(await waitFor(() => /Train Epoch: 1 \[64\//.test(stdout), 30_000), stdout);
  worker.kill('SIGKILL');
  assert.ok(await waitFor(() => /no worker left/.test(stderr), 15_000), stderr);
  const signalled = Date.now();
  coordinator.kill('SIGTERM');
  assert.equal(await exited, 143, stderr);
  assert.ok(Date.now() - signalled < 5000, `took ${Date.now() - signalled} ms to stop`);
  assert.match(stderr, /interrupted at step \d+; checkpoint written/);

  const resumed = await runCli(COORDINATOR, ['--resume', '--workers', '1', '--out', out], { timeoutMs: 120_000 });
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.equal(readJson(join(out, 'summary.json')).weights_sha256, undisturbed);
});

test('a member that says hello again is taken in afresh: a new welcome, and its shard again with the weights', async () => {
  const listen = `tcp://127.0.0.1:${await freePort()}`;
  const out = join(tempDir(), 'run');
  const coordinator = runCli(COORDINATOR, [...RUN, '--workers', '1', '--no-spawn', '--listen', listen, '--out', out], { timeoutMs: 120_000 });
  // A worker that joins, takes its first assignment, then (as if it had heard nothing from the
  // coordinator for its timeout) drops it and says hello again; from then on, an honest worker.
  const { Dealer } = await import('zeromq');
  const { PROTOCOL_VERSION, decodeCoordinatorMessage, encode } = await import('../src/protocol/messages.js');
  const dealer = new Dealer({ routingId: 'forgetful', linger: 0 });
  dealer.connect(listen);
  const hello = encode({ type: 'hello', protocol: PROTOCOL_VERSION, workerId: 'forgetful', pid: 1, host: 'elsewhere', backend: 'wasm', device: 'x', ...identity });
  await dealer.send(hello);
  const beat = setInterval(() => void dealer.send(encode({ type: 'heartbeat', t: Date.now() })).catch(() => {}), 300);
  const seen: string[] = [];
  // 0: joining; 1: said hello again, waiting for the new welcome (what was queued before it is old); 2: welcomed again.
  let phase = 0;
  try {
    for await (const frames of dealer) {
      const m = decodeCoordinatorMessage(frames);
      const what = m.type === 'assign' ? `assign${m.weights ? '+weights' : ''}` : m.type;
      if (what === 'heartbeat') continue;
      if (phase === 0) {
        seen.push(what);
        if (m.type === 'assign') {
          await new Promise((r) => setTimeout(r, 5500));
          await dealer.send(hello);
          phase = 1;
        }
      } else if (phase === 1) {
        if (m.type === 'welcome') {
          seen.push(what);
          phase = 2;
        }
      } else if (m.type === 'assign') {
        seen.push(what);
        break;
      }
    }
  } finally {
    clearInterval(beat);
    dealer.close();
  }
  assert.deepEqual(seen, ['welcome', 'assign+weights', 'welcome', 'assign+weights']);
  // The real run goes on with an honest worker.
  const honest = await runCli(WORKER, ['--connect', listen]);
  const r = await coordinator;
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /worker forgetful said hello again \(it lost track of this coordinator\): taking it in afresh/);
  assert.equal(honest.code, 0, honest.stderr);
});

test('a worker frozen past --worker-timeout and resumed is asked to say hello again: admitted within seconds, not after its 10 s silence timeout', async () => {
  const { undisturbed, listen, out } = await prepareRun();
  const { worker, exited, log } = startWaitingRun(listen, out);
  assert.ok(await waitFor(() => /Train Epoch: 1 \[64\//.test(log.stdout), 30_000), log.stdout + log.worker);
  worker.kill('SIGSTOP');
  assert.ok(await waitFor(() => /lost worker .*: silent for/.test(log.stderr), 15_000), log.stderr);
  worker.kill('SIGCONT');
  const resumed = Date.now();
  // Its own silence timeout (twice --worker-timeout, at least 10 s) counts from the coordinator's
  // heartbeats it reads on waking: rejoining on that alone takes 10 s from here.
  assert.ok(await waitFor(() => /rejoined the coordinator/.test(log.worker), 30_000), log.worker);
  const rejoinedAfter = Date.now() - resumed;
  assert.ok(rejoinedAfter < 6000, `rejoined ${rejoinedAfter} ms after it was resumed`);

  assert.equal(await exited, 0, log.stdout + log.stderr);
  assert.match(log.stdout, /asked .*, not in the pool, to say hello again/);
  assert.doesNotMatch(log.stderr, /invalid result/, 'what it computed before rejoining is not taken for a part of what it computes after');
  assert.match(log.worker, /the coordinator does not know this worker/);
  assert.equal(readJson(join(out, 'summary.json')).weights_sha256, undisturbed);
  assert.ok(await waitFor(() => worker.exitCode !== null, 15_000));
  assert.equal(worker.exitCode, 0, log.worker);
});
