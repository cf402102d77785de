/**
 * Spot checks (--verify-fraction P), with a real coordinator, a real worker process and a poisoner
 * speaking the protocol over a real socket: it sends every gradient entry as 50 with the right
 * step, shard and count, which every check before spot checks let through.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Dealer } from 'zeromq';
import { PROTOCOL_VERSION, assignedSamples, decodeCoordinatorMessage, encode } from '../src/protocol/messages.js';
import { COORDINATOR, WORKER, readJson, runCli, startCoordinator, tempDir, waitFor, workerIdentity, workerPids } from './helpers.js';

// One engine for the reference, the coordinator and the workers: results must match bit for bit.
const RUN = ['--epochs', '1', '--train-limit', '1280', '--test-limit', '500', '--deterministic', '--engine', 'wasm', '--log-interval', '5'];
/** 1280 samples in batches of 64, shards of 16 (the deterministic default). */
const SHARDS = (1280 / 64) * 4;

after(async () => {
  assert.ok(await waitFor(() => workerPids().length === 0, 5000), `workers left behind: ${workerPids().join(', ')}`);
});

const dir = tempDir();
let referenceRun: Promise<Record<string, unknown>> | undefined;
/** The undisturbed run: one process, no workers. */
function reference(): Promise<Record<string, unknown>> {
  referenceRun ??= runCli(COORDINATOR, [...RUN, '--workers', '0', '--out', join(dir, 'reference')]).then((r) => {
    assert.equal(r.code, 0, r.stderr);
    return readJson(join(dir, 'reference', 'summary.json'));
  });
  return referenceRun;
}

interface Poisoner {
  /** Results it sent. */
  sent: () => number;
  /** Why the coordinator put it out, and what it said to a second hello under the same id. */
  rejections: string[];
  close: () => Promise<void>;
}

/** Joins `addr` and answers every assignment with a gradient of 50s and the right counts. */
async function startPoisoner(addr: string, id: string): Promise<Poisoner> {
  const socket = new Dealer({ routingId: id, linger: 0 });
  socket.connect(addr);
  // It says it is of this build, on the wasm engine, as an honest worker would.
  const identity = await workerIdentity({ noCuda: true, engine: 'wasm' });
  const hello = encode({ type: 'hello', protocol: PROTOCOL_VERSION, workerId: id, pid: 1, host: 'elsewhere', backend: 'wasm', device: 'cpu', ...identity });
  await socket.send(hello);
  const heartbeat = setInterval(() => void socket.send(encode({ type: 'heartbeat', t: Date.now() })).catch(() => {}), 300);
  let params = 0;
  let sent = 0;
  const rejections: string[] = [];
  const loop = (async () => {
    for await (const frames of socket) {
      const m = decodeCoordinatorMessage(frames);
      if (m.type === 'shutdown') break;
      if (m.type === 'welcome') params = m.params;
      if (m.type === 'reject') {
        rejections.push(m.reason);
        // Put out: it tries again under the same identity.
        if (rejections.length === 1) await socket.send(hello);
        else break;
      }
      if (m.type !== 'assign') continue;
      const gradSum = new Float32Array(params).fill(50);
      await socket.send(encode({ type: 'result', step: m.step, shard: m.shard, weightsVersion: m.weightsVersion, gradSum, lossSum: 2.3 * assignedSamples(m), count: assignedSamples(m), computeMs: 1 }));
      sent++;
    }
  })().catch(() => {});
  return {
    sent: () => sent,
    rejections,
    close: async () => {
      clearInterval(heartbeat);
      socket.close();
      await loop;
    },
  };
}

/** A coordinator waiting for 2 workers (a poisoner and an honest worker process), with --verify-fraction P. */
async function poisonedRun(name: string, fraction: string, args = RUN): Promise<{ summary: Record<string, unknown>; stderr: string; poisoner: Poisoner }> {
  const run = startCoordinator([...args, '--workers', '2', '--no-spawn', '--listen', 'tcp://127.0.0.1:*', '--verify-fraction', fraction, '--out', join(dir, name)]);
  try {
    assert.ok(await waitFor(() => /waiting for 2 workers on tcp:\/\/127\.0\.0\.1:\d+/.test(run.out()), 30_000), run.err());
    const addr = /waiting for 2 workers on (tcp:\/\/127\.0\.0\.1:\d+)/.exec(run.out())![1];
    const poisoner = await startPoisoner(addr, `poisoner-${name}`);
    const honest = runCli(WORKER, ['--connect', addr, '--engine', 'wasm']);
    const code = await run.exit;
    await poisoner.close();
    assert.equal(code, 0, run.err());
    assert.equal((await honest).code, 0);
    return { summary: readJson(join(dir, name, 'summary.json')), stderr: run.err(), poisoner };
  } finally {
    run.child.kill('SIGKILL');
  }
}

test('--verify-fraction 1: a poisoner is caught on its first result, put out for good, and the weights are the undisturbed ones', async () => {
  const { summary, stderr, poisoner } = await poisonedRun('caught', '1');
  const ref = await reference();
  assert.ok(poisoner.sent() >= 1, 'the poisoner got work');
  assert.equal(summary.weights_sha256, ref.weights_sha256, 'no poisoned gradient was applied');
  assert.equal(summary.steps, ref.steps);
  const stats = summary.distributed as Record<string, number>;
  assert.equal(stats.rejected_by_verification, 1);
  assert.ok(stats.verified_shards >= SHARDS, `verified ${stats.verified_shards} of at least ${SHARDS} results`);
  assert.ok(stats.verify_ms_per_shard > 0);
  assert.equal(summary.worker_failures, 1, 'the poisoner only: the honest worker kept its place while the coordinator recomputed');
  assert.match(stderr, /lost worker poisoner-caught: its result for shard \d+ of step \d+ failed a spot check \(\d+ of 21840 gradient entries differ/);
  assert.match(poisoner.rejections[0] ?? '', /^put out of the run: /);
  assert.match(poisoner.rejections[1] ?? '', /may not rejoin/, 'the same identity is refused afterwards');
  process.stdout.write(`# verify-fraction 1: ${stats.verified_shards} results recomputed, ${stats.verify_ms_per_shard.toFixed(1)} ms each\n`);
});

test('--verify-fraction 1 with honest workers changes nothing: every result matches bit for bit, same digest', async () => {
  const out = join(dir, 'honest');
  const r = await runCli(COORDINATOR, [...RUN, '--workers', '2', '--verify-fraction', '1', '--out', out]);
  assert.equal(r.code, 0, r.stderr);
  const summary = readJson(join(out, 'summary.json'));
  assert.equal(summary.weights_sha256, (await reference()).weights_sha256);
  const stats = summary.distributed as Record<string, number>;
  assert.equal(stats.verified_shards, SHARDS, 'every result was checked');
  assert.equal(stats.rejected_by_verification, 0);
  assert.equal(stats.verify_fraction, 1);
  assert.equal(summary.worker_failures, 0);
});

test('--verify-fraction 0.25: the poisoner is caught in the first step it poisons, and the run learns as if it had not been there', async () => {
  // Batches of 640 in 80 shards of 8: the poisoner sends about 40 results a step, and the step is
  // let through only if none of them is checked, with probability 0.75^40 ≈ 1e-5. When one is
  // caught, its other results of the step are computed again: nothing of it is applied. Unchecked,
  // this poisoner leaves the model at chance (11% measured); undisturbed, this run reaches 59.2%.
  const args = ['--epochs', '1', '--train-limit', '6400', '--test-limit', '500', '--batch-size', '640', '--lr', '0.1', '--momentum', '0.9', '--deterministic', '--shard-size', '8', '--engine', 'wasm', '--log-interval', '5'];
  const { summary, stderr } = await poisonedRun('sampled', '0.25', args);
  const stats = summary.distributed as Record<string, number>;
  assert.equal(stats.rejected_by_verification, 1, 'caught');
  assert.match(stderr, /lost worker poisoner-sampled: .*failed a spot check/);
  assert.ok(stats.verified_shards < 800, `only a fraction of the 800 results was recomputed (${stats.verified_shards})`);
  const accuracy = summary.test_accuracy as number;
  assert.ok(accuracy >= 0.4, `accuracy ${accuracy}: the model learnt (chance is 0.1)`);
  process.stdout.write(`# verify-fraction 0.25: accuracy ${accuracy}; ${stats.verified_shards} of 800 results recomputed\n`);
});

test('a bad --verify-fraction gets one line and exit code 2', async () => {
  for (const bad of ['1.5', '-0.1', 'half']) {
    const r = await runCli(COORDINATOR, ['--workers', '1', '--verify-fraction', bad, '--out', join(dir, 'never')]);
    assert.equal(r.code, 2, `${bad}: ${r.stderr}`);
    assert.match(r.stderr, /^coordinator: error: .*--verify-fraction.* must be a number from 0 to 1\.\n$/);
  }
});
