/**
 * Integrity and identity, with a real coordinator and raw ZeroMQ sockets speaking the protocol:
 * a duplicate result never evicts the honest worker that sent it (the first valid result wins),
 * and a hello that claims a spawned child's pid is not taken as that child.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Dealer } from 'zeromq';
import { initEngine } from '../src/engine/backend.js';
import { createModel, isModelName, paramLayout } from '../src/models/index.js';
import { PROTOCOL_VERSION, assignedSamples, copyTensor, decodeCoordinatorMessage, encode } from '../src/protocol/messages.js';
import { createGradientComputer } from '../src/training/gradients.js';
import { referenceRun, readJson, startCoordinator, tempDir, waitFor, workerPids, workerIdentity } from './helpers.js';

/** What a worker of this build says of itself in its hello: on the engine the runs below compute with. */
const identity = await workerIdentity({ noCuda: true, engine: 'wasm' });

// One engine for the reference, the coordinator and the gradients this test computes itself.
const RUN = ['--epochs', '1', '--train-limit', '256', '--test-limit', '100', '--deterministic', '--engine', 'wasm', '--log-interval', '1'];

after(async () => {
  assert.ok(await waitFor(() => workerPids().length === 0, 5000), `workers left behind: ${workerPids().join(', ')}`);
});

test('a worker that sends every result twice, the second one garbage, stays in the pool; the first result wins', async (t) => {
  const dir = tempDir();
  const reference = await referenceRun(RUN, dir);

  const run = startCoordinator([...RUN, '--workers', '1', '--no-spawn', '--listen', 'tcp://127.0.0.1:*', '--worker-timeout', '5', '--out', join(dir, 'doubled')]);
  t.after(() => run.child.kill('SIGKILL'));
  assert.ok(await waitFor(() => /waiting for 1 worker on tcp:\/\/127\.0\.0\.1:\d+/.test(run.out()), 30_000), run.err());
  const addr = /waiting for 1 worker on (tcp:\/\/127\.0\.0\.1:\d+)/.exec(run.out())![1];

  // A worker speaking the protocol from this process, computing real gradients: each result goes
  // out twice, the copy with the right step, shard and count but a gradient of 50s.
  await initEngine({ noCuda: true, engine: 'wasm' });
  const socket = new Dealer({ routingId: 'doubler', linger: 0 });
  socket.connect(addr);
  await socket.send(encode({ type: 'hello', protocol: PROTOCOL_VERSION, workerId: 'doubler', pid: 1, host: 'elsewhere', backend: 'wasm', device: 'test', ...identity }));
  let duplicates = 0;
  const heartbeat = setInterval(() => void socket.send(encode({ type: 'heartbeat', t: Date.now() })).catch(() => {}), 300);
  const loop = (async () => {
    let computer: ReturnType<typeof createGradientComputer> | undefined;
    let weights = new Float32Array(0);
    for await (const frames of socket) {
      const m = decodeCoordinatorMessage(frames);
      if (m.type === 'shutdown') break;
      if (m.type === 'welcome') {
        assert.ok(isModelName(m.model));
        const model = createModel(m.model);
        computer = createGradientComputer(model);
        weights = new Float32Array(paramLayout(model).total);
        continue;
      }
      if (m.type !== 'assign' || !computer) continue;
      if (m.weights) copyTensor(m.weights, weights);
      const keys = new Uint32Array(assignedSamples(m));
      copyTensor(m.keys, keys);
      const r = await computer.compute(weights, { pixels: m.pixels!, labels: m.labels!, keys });
      const result = { type: 'result', step: m.step, shard: m.shard, weightsVersion: m.weightsVersion, lossSum: r.lossSum, count: r.count, computeMs: 1 } as const;
      await socket.send(encode({ ...result, gradSum: r.gradSum }));
      await socket.send(encode({ ...result, gradSum: new Float32Array(r.gradSum.length).fill(50), lossSum: 50 }));
      duplicates++;
    }
  })();

  const code = await run.exit;
  clearInterval(heartbeat);
  socket.close();
  await loop.catch(() => {});
  assert.equal(code, 0, run.err());
  assert.doesNotMatch(run.err(), /lost worker doubler/);
  const summary = readJson(join(dir, 'doubled', 'summary.json'));
  assert.equal(summary.weights_sha256, reference.weights_sha256, 'no duplicate was applied');
  assert.equal(summary.worker_failures, 0);
  // 4 steps of 4 shards: each shard's copy but the step's last arrives while its step is in flight.
  assert.equal(duplicates, 16);
  const stats = summary.distributed as Record<string, number>;
  assert.ok(stats.stale_results >= 12, `stale/duplicate results counted: ${stats.stale_results}`);
  assert.equal(stats.rejected_messages, 0, 'a duplicate is not a rejected message');
});

/** The `--connect` address on a process's command line. */
function connectAddress(pid: number): string {
  const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  return argv[argv.indexOf('--connect') + 1];
}

test("a hello with a spawned child's pid is not taken as the child: evicting it leaves the child alone", async (t) => {
  const dir = tempDir();
  const args = [...RUN, '--train-limit', '1024', '--worker-timeout', '5'];
  const reference = await referenceRun(args, dir);

  const run = startCoordinator([...args, '--workers', '1', '--out', join(dir, 'impostor')]);
  const impostor = new Dealer({ routingId: 'impostor', linger: 0 });
  t.after(() => {
    if (!impostor.closed) impostor.close();
    run.child.kill('SIGKILL');
  });
  assert.ok(await waitFor(() => workerPids().length === 1, 30_000), run.err());
  const [childPid] = workerPids();
  const addr = connectAddress(childPid);

  // Same host, the child's pid, no secret; it then returns a broken result and is evicted.
  impostor.connect(addr);
  await impostor.send(encode({ type: 'hello', protocol: PROTOCOL_VERSION, workerId: 'impostor', pid: childPid, host: hostname(), backend: 'wasm', device: 'test', ...identity }));
  let streamGradients: boolean | undefined;
  const loop = (async () => {
    for await (const frames of impostor) {
      const m = decodeCoordinatorMessage(frames);
      if (m.type === 'welcome') streamGradients = m.streamGradients;
      if (m.type !== 'assign') continue;
      const bad = { type: 'result', step: m.step, shard: m.shard, weightsVersion: m.weightsVersion, gradSum: new Float32Array(7), lossSum: 1, count: assignedSamples(m), computeMs: 1 } as const;
      await impostor.send(encode(bad));
    }
  })().catch(() => {});

  assert.ok(await waitFor(() => /lost worker impostor: sent an invalid result/.test(run.err()), 60_000), `the impostor was not evicted:\n${run.err()}`);
  assert.equal(streamGradients, true, 'welcomed as a worker from elsewhere, not as the spawned child');
  await new Promise((r) => setTimeout(r, 300));
  assert.doesNotThrow(() => process.kill(childPid, 0), 'the spawned child is still alive');

  const code = await run.exit;
  impostor.close();
  await loop;
  assert.equal(code, 0, run.err());
  assert.doesNotMatch(run.err(), /starting a replacement worker|killed by SIGKILL/);
  const summary = readJson(join(dir, 'impostor', 'summary.json'));
  assert.equal(summary.worker_failures, 1, 'the impostor, and only it, was lost');
  assert.equal(summary.weights_sha256, reference.weights_sha256);
});
