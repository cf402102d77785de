/** summary.json names the step's fixed cost: wall time minus the slowest worker's compute. */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { COORDINATOR, readJson, runCli, tempDir } from './helpers.js';

interface Summary {
  steps: number;
  train_seconds: number;
  distributed: { step_overhead_ms: { median: number; p90: number; steps: number }; worker_compute_ms_per_shard: number };
}

test('distributed.step_overhead_ms: median and 90th percentile over every step but the first and last', async () => {
  const out = join(tempDir(), 'run');
  const r = await runCli(COORDINATOR, ['--workers', '2', '--epochs', '1', '--train-limit', '1920', '--test-limit', '100', '--out', out]);
  assert.equal(r.code, 0, r.stderr);
  const s = readJson<Summary>(join(out, 'summary.json'));
  const o = s.distributed.step_overhead_ms;
  assert.equal(s.steps, 30);
  assert.equal(o.steps, 28);
  assert.ok(o.median > 0 && Number.isFinite(o.median), JSON.stringify(o));
  assert.ok(o.p90 >= o.median, JSON.stringify(o));
  // Overhead and compute together make the step: the overhead is below a step's mean wall time.
  const meanStepMs = (1000 * s.train_seconds) / s.steps;
  assert.ok(o.median < meanStepMs, `overhead ${o.median} ms, a step ${meanStepMs} ms`);
  // Two shards of 32 run side by side: a step is at least one shard's compute plus the overhead.
  assert.ok(o.median + s.distributed.worker_compute_ms_per_shard <= meanStepMs * 1.5, `${o.median} + ${s.distributed.worker_compute_ms_per_shard} vs ${meanStepMs}`);
});
