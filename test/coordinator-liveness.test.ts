/**
 * Liveness does not wait for compute: a step far longer than --worker-timeout evicts nobody,
 * because long computations let the event loop run between their chunks (util/yield.ts), so
 * heartbeats go out and come in while they run.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { COORDINATOR, readJson, runCli, tempDir } from './helpers.js';

interface Summary {
  worker_failures: number;
  steps: number;
  distributed: { worker_compute_ms_per_shard: number };
}

test('a shard that computes for several times --worker-timeout evicts no healthy worker', async () => {
  const out = join(tempDir(), 'run');
  // strong at batch 8192 on one worker: each shard computes for seconds (about 8 s on a 2-vCPU Xeon
  // with AVX-512; 4096 samples took 3.96 s there, short of the test's twice the timeout), against a 2 s timeout.
  const r = await runCli(
    COORDINATOR,
    ['--model', 'strong', '--batch-size', '8192', '--workers', '1', '--worker-timeout', '2', '--epochs', '1', '--train-limit', '16384', '--test-limit', '100', '--engine', 'wasm', '--no-augment', '--out', out],
    { timeoutMs: 300_000 },
  );
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const summary = readJson<Summary>(join(out, 'summary.json'));
  assert.equal(summary.steps, 2);
  assert.ok(summary.distributed.worker_compute_ms_per_shard > 2 * 2000, `a shard took ${summary.distributed.worker_compute_ms_per_shard} ms: not long enough to test`);
  assert.equal(summary.worker_failures, 0, r.stdout);
  assert.doesNotMatch(r.stdout, /silent for/);
});
