/**
 * Weak scaling (--batch-size-per-worker, --lr-scaling, --warmup-epochs): the global batch and the
 * learning-rate schedule, the bad combinations of flags, and deterministic mode's promise: a weak-
 * scaling run gives the weights of the run with the same global batch and the same rates, on any
 * number of workers.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Command } from 'commander';
import { type TrainFlags, addTrainingFlags, configFromFlags, givenConfigKeys } from '../src/cli/flags.js';
import { lrAt } from '../src/config.js';
import { COORDINATOR, readJson, runCli, tempDir, waitFor, workerPids } from './helpers.js';

const SUBSET = ['--epochs', '1', '--train-limit', '640', '--test-limit', '100', '--deterministic', '--log-interval', '1'];

interface Summary {
  weights_sha256: string;
  batch: { global: number; per_worker: number | null; lr_scaling: string; lr: number; lr_factor: number; warmup_epochs: number | null; warmup_steps: number };
}

after(async () => {
  assert.ok(await waitFor(() => workerPids().length === 0, 5000), `workers left behind: ${workerPids().join(', ')}`);
});

/** The run's configuration as `coordinator ARGS` would make it. */
function configOf(args: string[]) {
  const cmd = addTrainingFlags(new Command()).exitOverride().configureOutput({ writeErr: () => {} });
  cmd.parse(args, { from: 'user' });
  return configFromFlags(cmd.opts() as TrainFlags, { workers: 2, outDir: 'unused' }, givenConfigKeys(cmd));
}

test('the global batch is B × workers (× 1 for the single-node fallback); the rate rises from lr to lr × N over the warm-up', () => {
  const c = configOf(['--batch-size-per-worker', '32', '--workers', '4', '--lr', '0.01', '--warmup-epochs', '0.5', '--epochs', '1']);
  assert.equal(c.batchSize, 128);
  assert.equal(c.lrScaling, 'linear');
  assert.equal(configOf(['--batch-size-per-worker', '32', '--workers', '0']).batchSize, 32);
  assert.equal(lrAt(configOf(['--batch-size-per-worker', '32', '--workers', '1', '--epochs', '1']), 0, 10), 0.01, 'one worker: nothing to scale');
  assert.equal(configOf(['--batch-size-per-worker', '32', '--model', 'strong']).batchSize, 64, "the model's own --batch-size does not apply");
  // 10 steps per epoch: a warm-up of 5 steps, from 0.01 to 0.04.
  const totalSteps = 10;
  const rates = Array.from({ length: 7 }, (_, step) => lrAt(c, step, totalSteps));
  const expected = [0.01, 0.016, 0.022, 0.028, 0.034, 0.04, 0.04];
  rates.forEach((r, i) => assert.ok(Math.abs(r - expected[i]) < 1e-12, `step ${i}: ${r}, expected ${expected[i]}`));
  const none = configOf(['--batch-size-per-worker', '32', '--workers', '4', '--lr-scaling', 'none']);
  assert.equal(lrAt(none, 0, totalSteps), 0.01);
  // Under a cosine schedule, the warm-up multiplies the schedule's rate.
  const cosine = configOf(['--batch-size-per-worker', '32', '--workers', '2', '--lr-schedule', 'cosine', '--warmup-epochs', '0.5', '--epochs', '1']);
  assert.ok(Math.abs(lrAt(cosine, 5, totalSteps) - 0.02 * 0.5) < 1e-12);
  assert.equal(lrAt(configOf(['--batch-size', '64']), 0, totalSteps), 0.01, 'without weak scaling the rate is --lr');
});

test('bad combinations: one line each, exit status 2', async () => {
  const dir = tempDir();
  const cases: Array<[string[], RegExp]> = [
    [['--batch-size', '64', '--batch-size-per-worker', '32'], /^coordinator: error: option '--batch-size-per-worker <n>' cannot be used with option '--batch-size <n>'$/],
    [['--lr-scaling', 'linear'], /^coordinator: error: --lr-scaling linear .* needs --batch-size-per-worker$/],
  ];
  for (const [args, message] of cases) {
    const r = await runCli(COORDINATOR, [...args, '--workers', '0', '--out', join(dir, 'never')], { timeoutMs: 60_000 });
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], message);
  }
  // The values commander checks itself, in this process.
  assert.throws(() => configOf(['--batch-size-per-worker', '32', '--warmup-epochs', '-1']), /--warmup-epochs.*must be a number ≥ 0/);
  assert.throws(() => configOf(['--grad-dtype', 'float8']), /--grad-dtype.*float8.*float32, float16, bfloat16/);
});

test('deterministic weak scaling: 2 workers × 32 give the weights of batch 64 with the same rates on 0, 1 or 3 workers', async () => {
  const dir = tempDir();
  const run = async (name: string, args: string[]): Promise<Summary> => {
    const r = await runCli(COORDINATOR, [...SUBSET, ...args, '--out', join(dir, name)]);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    return readJson<Summary>(join(dir, name, 'summary.json'));
  };
  // Linear scaling without a warm-up: the rate is 0.01 × 2 = 0.02 from the first step.
  const weak = await run('weak', ['--workers', '2', '--batch-size-per-worker', '32', '--warmup-epochs', '0']);
  const strong = await run('strong', ['--workers', '3', '--batch-size', '64', '--lr', '0.02']);
  assert.equal(weak.weights_sha256, strong.weights_sha256);
  assert.deepEqual(weak.batch, { global: 64, per_worker: 32, lr_scaling: 'linear', lr: 0.01, lr_factor: 2, warmup_epochs: 0, warmup_steps: 0 });
  // No scaling: batch 64 at --lr, as a plain run of batch 64 in one process.
  const unscaled = await run('unscaled', ['--workers', '2', '--batch-size-per-worker', '32', '--lr-scaling', 'none']);
  const single = await run('single', ['--workers', '0', '--batch-size', '64']);
  assert.equal(unscaled.weights_sha256, single.weights_sha256);
  assert.notEqual(unscaled.weights_sha256, weak.weights_sha256);

  // A warm-up over 1.5 of 2 epochs (15 of 20 steps) changes the first steps' rates, which
  // metrics.jsonl records; N and the rates are fixed at the start, so a run stopped after an epoch and
  // resumed on 3 workers ends with the same weights.
  const warmFlags = ['--batch-size-per-worker', '32', '--warmup-epochs', '1.5'];
  const warm = await run('warm', ['--workers', '2', '--epochs', '2', ...warmFlags]);
  assert.equal(warm.batch.warmup_steps, 15);
  assert.notEqual(warm.weights_sha256, weak.weights_sha256);
  const rates = readFileSync(join(dir, 'warm', 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { type: string; lr: number })
    .filter((m) => m.type === 'train')
    .map((m) => m.lr);
  const expected = Array.from({ length: 20 }, (_, step) => (step < 15 ? 0.01 * (1 + step / 15) : 0.02));
  rates.forEach((r, i) => assert.ok(Math.abs(r - expected[i]) < 1e-12, `step ${i}: lr ${r}, expected ${expected[i]}`));
  await run('resumed', ['--workers', '2', '--epochs', '1', ...warmFlags]);
  const r = await runCli(COORDINATOR, [...SUBSET, ...warmFlags, '--workers', '3', '--epochs', '2', '--resume', '--out', join(dir, 'resumed')]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr + r.stdout, /keeps its global batch of 64 \(32 per worker × 2\)/);
  assert.equal(readJson<Summary>(join(dir, 'resumed', 'summary.json')).weights_sha256, warm.weights_sha256);
});
