import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { readJson, runCli, tempDir } from './helpers.js';

const BENCH = fileURLToPath(new URL('../bench/bench.js', import.meta.url));
const KERNELS_AB = fileURLToPath(new URL('../bench/fused-kernels-ab.js', import.meta.url));
const KERNELS_WASM = fileURLToPath(new URL('../src/engine/simd/kernels.wasm', import.meta.url));
const hasTaskset = spawnSync('taskset', ['-c', '0', 'true']).status === 0;

test('bench: bad --workers and --cpus are refused with the flag named, exit status 2', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['--workers', '1,x'], /^bench: --workers x: must be a positive integer$/],
    [['--workers=-1'], /^bench: --workers -1: must be a positive integer$/],
    [['--cpus', 'first'], /^bench: --cpus first: expected a CPU list such as 0,1 or 0-3$/],
    [['--batch-size', '64', '--batch-size-per-worker', '32'], /^bench: give one of --batch-size, --batch-sizes and --batch-size-per-worker, not --batch-size and --batch-size-per-worker$/],
  ];
  for (const [args, pattern] of cases) {
    const r = await runCli(BENCH, args);
    assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
    assert.match(r.stderr.split('\n')[0], pattern);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
});

interface BenchJson {
  meta: { pinned_to_cpus: string | null };
  runs: Array<{ id: string; ok: boolean; workers?: number; command: string; result?: { train_samples_per_s: number; workers: number } }>;
}

test('bench: --workers picks the rows, --cpus pins every run, and the table shows the scaling', { skip: !hasTaskset && 'taskset is not installed' }, async () => {
  const out = join(tempDir(), 'bench');
  const r = await runCli(BENCH, ['--skip-reference', '--workers', '1,2', '--cpus', '0', '--train-limit', '640', '--out', out], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr);

  const bench = readJson<BenchJson>(join(out, 'bench.json'));
  assert.equal(bench.meta.pinned_to_cpus, '0');
  assert.deepEqual(
    bench.runs.map((run) => [run.id, run.ok, run.result?.workers]),
    [
      ['w1', true, 1],
      ['w2', true, 2],
    ],
  );
  for (const run of bench.runs) assert.match(run.command, /^taskset -c 0 /);

  // The scaling column: workers=1 is 1.00 by definition, workers=2 is its samples/s over workers=1's.
  const [w1, w2] = bench.runs.map((run) => run.result!.train_samples_per_s);
  const md = readFileSync(join(out, 'bench.md'), 'utf8');
  assert.match(md, /every run pinned to CPUs 0;/);
  const cells = (label: string): string[] => {
    const line = md.split('\n').find((l) => l.startsWith(`| ${label} `));
    assert.ok(line, `no ${label} row in\n${md}`);
    return line.split('|').map((c) => c.trim());
  };
  const header = md.split('\n').find((l) => l.startsWith('| run '))!.split('|').map((c) => c.trim());
  const column = header.indexOf('× workers=1');
  assert.ok(column > 0, `no scaling column in\n${md}`);
  assert.equal(cells('workers=1')[column], '1.00');
  assert.equal(cells('workers=2')[column], (w2 / w1).toFixed(2));
  assert.match(md, /workers=2 \/ workers=1 ≥ 1\.7×\s*\|\s*\d\.\d\d×/);
});

test('bench: --batch-size-per-worker runs ours with weak scaling and checks the weak scaling target', async () => {
  const out = join(tempDir(), 'bench');
  const r = await runCli(BENCH, ['--skip-reference', '--workers', '1,2', '--batch-size-per-worker', '32', '--train-limit', '640', '--out', out], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr);
  const bench = readJson<{ runs: Array<{ id: string; ok: boolean; command: string; result?: { batch?: { global: number; per_worker: number } } }> }>(join(out, 'bench.json'));
  assert.deepEqual(
    bench.runs.map((run) => [run.id, run.ok, run.result?.batch?.global, run.result?.batch?.per_worker]),
    [
      ['w1-weak32', true, 32, 32],
      ['w2-weak32', true, 64, 32],
    ],
  );
  for (const run of bench.runs) assert.match(run.command, / --batch-size-per-worker 32 /);
  const md = readFileSync(join(out, 'bench.md'), 'utf8');
  assert.match(md, /weak scaling: 32 samples per worker and step/);
  assert.match(md, /workers=2 \/ workers=1 ≥ 1\.6× \(weak scaling, 32 per worker\)\s*\|\s*\d\.\d\d×/);
});

test('fused-kernels-ab: a build against itself has the same bits and a timing row per kernel; bad arguments exit 2', async () => {
  const r = await runCli(KERNELS_AB, [KERNELS_WASM, KERNELS_WASM, '--rounds', '1']);
  assert.equal(r.code, 0, r.stderr);
  for (const kernel of ['conv1 forward', 'conv1 weight gradient', 'conv2 forward', 'conv2 weight gradient', 'conv2 input gradient']) {
    assert.match(r.stdout, new RegExp(`^${kernel} +same bits \\(\\d+ values\\)$`, 'm'));
    assert.match(r.stdout, new RegExp(`^${kernel} +\\d+\\.\\d{3} +\\d+\\.\\d{3} +\\d+\\.\\d\\d$`, 'm'));
  }
  const bad = await runCli(KERNELS_AB, [KERNELS_WASM]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^usage: /);
  const missing = await runCli(KERNELS_AB, [KERNELS_WASM, '/nonexistent/kernels.wasm']);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /^fused-kernels-ab: .*nonexistent/);
});
