/**
 * The chaos test, CI-sized: a deterministic coordinator and 3 worker processes, each through its own
 * TCP relay, while a seeded plan kills a worker (and restarts it), freezes one past --worker-timeout,
 * drops one's link, stalls one's link, and kills the coordinator (resumed with --resume on the same
 * address). The run must end with the weights, steps and evaluations of an undisturbed run.
 * `npm run bench:chaos` is the longer run (bench/chaos/run.ts).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { FAULT_KINDS, formatReport, runChaos } from '../bench/chaos/run.js';
import { tempDir, waitFor, workerPids } from './helpers.js';

after(async () => {
  assert.ok(await waitFor(() => workerPids().length === 0, 10_000), `workers left behind: ${workerPids().length}`);
});

test('3 workers under one fault of each kind (seed 1): every fault survived, the undisturbed weights, nothing lost', { timeout: 240_000 }, async (t) => {
  const report = await runChaos({
    workers: 3,
    epochs: 3,
    trainLimit: 512,
    testLimit: 200,
    batchSize: 32,
    seed: 1,
    faultsPerKind: 1,
    // Steps of a few hundred ms, so that the five faults land within the 48 steps.
    latencyMs: 100,
    workerTimeoutS: 2,
    checkpointEvery: 2,
    out: join(tempDir('mnist-chaos-'), 'chaos'),
    timeoutMs: 200_000,
  });
  const text = formatReport(report);
  for (const line of text.split('\n')) t.diagnostic(line);
  assert.deepEqual(report.problems, [], text);
  for (const kind of FAULT_KINDS) {
    const row = report.table.find((r) => r.kind === kind);
    assert.ok(row && row.injected >= 1, `${kind}: not injected\n${text}`);
    assert.equal(row.survived, row.injected, `${kind}\n${text}`);
  }
  assert.equal(report.weightsSha256, report.referenceSha256);
  assert.equal(report.steps, report.referenceSteps);
  assert.deepEqual(report.evaluatedEpochs, [1, 2, 3]);
  assert.equal(report.coordinatorStarts, 2, 'the coordinator was killed once and resumed');
  assert.deepEqual(report.unexpectedExits, []);
  assert.ok(report.ok);
});
