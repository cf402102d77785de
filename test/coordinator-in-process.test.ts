/**
 * --in-process-worker: one of the --workers N computes in the coordinator's process, which starts
 * N − 1 worker processes (real processes, real sockets, real MNIST subsets). Its shards must give
 * the bits a worker process gives, and the run must survive its other workers' faults as before.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { Dealer } from 'zeromq';
import { InProcessWorker } from '../src/coordinator/in-process-worker.js';
import { PROTOCOL_VERSION, encode } from '../src/protocol/messages.js';
import type { WorkerProcess } from '../src/coordinator/launcher.js';
import { WorkerPool } from '../src/coordinator/pool.js';
import { initEngine } from '../src/engine/backend.js';
import { createModel, paramLayout } from '../src/models/index.js';
import { createLogger } from '../src/util/logger.js';
import { Terminal } from '../src/util/terminal.js';
import { COORDINATOR, WORKER, freePort, readJson, referenceRun, runCli, startCoordinator, tempDir, waitFor, workerIdentity, workerPids } from './helpers.js';

const SUBSET = ['--epochs', '1', '--train-limit', '640', '--test-limit', '100', '--deterministic'];

type Devices = { workers: Array<{ id: string }> };

test('--in-process-worker: the --workers 0 weights with 1, 2 and 3 workers, and one worker process fewer', async () => {
  const dir = tempDir();
  const reference = await referenceRun(SUBSET, dir);
  for (const workers of [1, 2, 3]) {
    const run = startCoordinator([...SUBSET, '--workers', String(workers), '--in-process-worker', '--log-interval', '1', '--out', join(dir, `w${workers}`)]);
    assert.ok(await waitFor(() => /Train Epoch: 1 \[\d+\//.test(run.out()), 60_000), run.err());
    // Counted while it trains: the in-process worker is no process of its own.
    const processes = workerPids().length;
    assert.equal(await run.exit, 0, run.err());
    assert.equal(processes, workers - 1, `worker processes while training with --workers ${workers}`);
    assert.match(run.out(), /joined \(in this process: wasm on cpu/);
    const summary = readJson(join(dir, `w${workers}`, 'summary.json'));
    assert.equal(summary.weights_sha256, reference.weights_sha256, `--workers ${workers} --in-process-worker`);
    assert.equal(summary.workers, workers);
    const devices = (summary.devices as Devices).workers;
    assert.equal(devices.length, workers);
    assert.equal(devices.filter((d) => d.id.endsWith('-in-process')).length, 1);
  }
});

test('--in-process-worker under --grad-dtype bfloat16: the bits of --workers 0 with the same dtype', async () => {
  const dir = tempDir();
  const flags = [...SUBSET, '--grad-dtype', 'bfloat16'];
  const reference = await referenceRun(flags, dir);
  const run = await runCli(COORDINATOR, [...flags, '--workers', '2', '--in-process-worker', '--out', join(dir, 'w2')]);
  assert.equal(run.code, 0, run.stderr);
  assert.equal(readJson(join(dir, 'w2', 'summary.json')).weights_sha256, reference.weights_sha256);
});

test('--in-process-worker --verify-fraction 1: the worker process\'s results are recomputed, not the in-process ones', async () => {
  const dir = tempDir();
  const reference = await referenceRun(SUBSET, dir);
  const run = await runCli(COORDINATOR, [...SUBSET, '--workers', '2', '--in-process-worker', '--verify-fraction', '1', '--out', join(dir, 'verified')]);
  assert.equal(run.code, 0, run.stderr);
  const summary = readJson(join(dir, 'verified', 'summary.json'));
  assert.equal(summary.weights_sha256, reference.weights_sha256);
  const d = summary.distributed as { verified_shards: number; rejected_by_verification: number };
  // 640 samples in batches of 64, fixed shards of 16: 40 shards, about half of them computed here.
  assert.equal(d.rejected_by_verification, 0);
  assert.ok(d.verified_shards >= 10 && d.verified_shards <= 30, `${d.verified_shards} of 40 shards recomputed`);
});

test('--in-process-worker: its worker process killed with SIGKILL mid-run is replaced, the weights unchanged', async () => {
  const dir = tempDir();
  const flags = [...SUBSET, '--train-limit', '1920'];
  const reference = await referenceRun(flags, dir);
  const run = startCoordinator([...flags, '--workers', '2', '--in-process-worker', '--log-interval', '1', '--worker-timeout', '2', '--out', join(dir, 'faulty')]);
  assert.ok(await waitFor(() => /Train Epoch: 1 \[320\//.test(run.out()), 60_000), `training did not start:\n${run.out()}\n${run.err()}`);
  const victims = workerPids();
  assert.equal(victims.length, 1);
  process.kill(victims[0], 'SIGKILL');
  assert.equal(await run.exit, 0, run.err());
  assert.match(run.err(), /lost worker .*killed by SIGKILL/);
  const summary = readJson(join(dir, 'faulty', 'summary.json'));
  assert.equal(summary.worker_failures, 1);
  assert.equal(summary.weights_sha256, reference.weights_sha256);
  assert.equal(summary.steps, reference.steps);
  assert.ok(await waitFor(() => workerPids().length === 0, 5000), 'no worker process left behind');
});

test('--in-process-worker: Ctrl-C mid-step checkpoints, --resume with it ends with the uninterrupted weights', async () => {
  const dir = tempDir();
  const flags = [...SUBSET, '--train-limit', '6400'];
  const reference = await referenceRun(flags, dir);
  const out = join(dir, 'interrupted');
  const run = startCoordinator([...flags, '--workers', '2', '--in-process-worker', '--log-interval', '1', '--out', out]);
  assert.ok(await waitFor(() => /Train Epoch: 1 \[1280\//.test(run.out()), 60_000), run.err());
  run.child.kill('SIGINT');
  assert.equal(await run.exit, 130, run.err());
  assert.match(run.err(), /checkpoint written, continue with --resume/);
  const resumed = await runCli(COORDINATOR, ['--resume', '--workers', '2', '--in-process-worker', '--out', out]);
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.match(resumed.stdout, /joined \(in this process: /);
  assert.equal(readJson(join(out, 'summary.json')).weights_sha256, reference.weights_sha256);
});

/** A deterministic `--workers N --in-process-worker --no-spawn` coordinator into DIR/NAME, once it waits for the N − 1 others. */
async function startWaitingCoordinator(workers: number, dir: string, name: string): Promise<{ run: ReturnType<typeof startCoordinator>; addr: string }> {
  const addr = `tcp://127.0.0.1:${await freePort()}`;
  const run = startCoordinator([...SUBSET, '--workers', String(workers), '--in-process-worker', '--no-spawn', '--listen', addr, '--out', join(dir, name)]);
  assert.ok(await waitFor(() => run.out().includes(`waiting for ${workers - 1} worker${workers === 2 ? '' : 's'} on`), 30_000), run.err());
  return { run, addr };
}

test('--in-process-worker --no-spawn: the coordinator waits for N − 1 workers and computes beside them', async () => {
  const dir = tempDir();
  const reference = await referenceRun(SUBSET, dir);
  const { run, addr } = await startWaitingCoordinator(3, dir, 'nospawn');
  const workers = [runCli(WORKER, ['--connect', addr]), runCli(WORKER, ['--connect', addr])];
  assert.equal(await run.exit, 0, run.err());
  for (const w of await Promise.all(workers)) assert.equal(w.code, 0, w.stderr);
  assert.equal(readJson(join(dir, 'nospawn', 'summary.json')).weights_sha256, reference.weights_sha256);
});

test('--in-process-worker: a connection that takes the in-process worker\'s id is refused, and the run keeps its weights', async () => {
  const dir = tempDir();
  const reference = await referenceRun(SUBSET, dir);
  const { run, addr } = await startWaitingCoordinator(2, dir, 'impostor');
  const impostor = new Dealer({ routingId: `${hostname()}-${run.child.pid}-in-process`, linger: 0 });
  impostor.connect(addr);
  const identity = await workerIdentity();
  const claim = (): Promise<void> =>
    impostor.send(encode({ type: 'hello', protocol: PROTOCOL_VERSION, workerId: 'impostor', pid: 1, host: 'elsewhere', backend: 'wasm', device: 'test', ...identity }));
  await claim();
  const worker = runCli(WORKER, ['--connect', addr]);
  assert.ok(await waitFor(() => /Train Epoch: 1 \[\d+\//.test(run.out()), 60_000), run.err());
  await claim();
  await impostor.send(encode({ type: 'result', step: 1, shard: 0, weightsVersion: 1, gradSum: new Float32Array(4), from: 0, lossSum: 0, count: 1, computeMs: 0 }));
  assert.equal(await run.exit, 0, run.err());
  impostor.close();
  assert.equal((await worker).code, 0);
  assert.match(run.err(), /rejected a message from .*-in-process: a connection uses the in-process worker's id/);
  assert.equal(readJson(join(dir, 'impostor', 'summary.json')).weights_sha256, reference.weights_sha256);
});

test('--in-process-worker with --workers 0 is one line naming the problem', async () => {
  const r = await runCli(COORDINATOR, ['--workers', '0', '--in-process-worker', '--out', join(tempDir(), 'x')]);
  assert.notEqual(r.code, 0);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, /--in-process-worker needs --workers N with N ≥ 1/);
  assert.doesNotMatch(r.stderr, /at .*\.js:\d+/);
});

test('--in-process-worker on a machine with GPUs: it is worker 0, the N − 1 spawned workers are pinned to GPUs 1, 2, …', async () => {
  await initEngine({ noCuda: true, engine: 'wasm' });
  const model = createModel('net');
  const identity = await workerIdentity({ noCuda: true, engine: 'wasm' });
  const inProcess = new InProcessWorker(model, {}, 'float32', { backend: 'wasm', device: 'cpu', ...identity });
  const spawned: string[][] = [];
  const sink = { write: () => true, isTTY: false } as unknown as NodeJS.WriteStream;
  // Fake processes that never say hello: the pool gives up waiting for them, once they are started.
  const fake = (args: string[]): WorkerProcess => {
    spawned.push(args);
    const p = Object.assign(new EventEmitter(), { pid: 5000 + spawned.length, exitCode: null, signalCode: null, stdout: new PassThrough() });
    return Object.assign(p, { kill: () => (setImmediate(() => p.emit('exit', null, 'SIGTERM')), true) }) as unknown as WorkerProcess;
  };
  await assert.rejects(
    WorkerPool.start({
      listen: `tcp://127.0.0.1:${await freePort()}`,
      workers: 3,
      spawn: true,
      gpus: 2,
      noCuda: false,
      model: 'net',
      params: paramLayout(model).total,
      logger: createLogger({ name: 'coordinator', terminal: new Terminal(sink, sink), terminalLevel: 'error' }),
      connectTimeoutMs: 300,
      inProcessWorker: inProcess,
      spawnProcess: (_command, args) => fake(args),
    }),
    /only 1 of 3 workers joined/,
  );
  assert.deepEqual(
    spawned.map((args) => args[args.indexOf('--gpu') + 1]),
    ['1', '0'],
    'two worker processes for --workers 3: workers 1 and 2, on GPUs 1 and 0 (of 2)',
  );
});
