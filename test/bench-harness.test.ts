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
const hasTorch = spawnSync(process.env.BENCH_PYTHON ?? '/usr/bin/python3', ['-c', 'import torch']).status === 0;

test('bench: bad --workers and --cpus are refused with the flag named, exit status 2', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['--workers', '1,x'], /^bench: --workers x: must be a positive integer$/],
    [['--workers=-1'], /^bench: --workers -1: must be a positive integer$/],
    [['--cpus', 'first'], /^bench: --cpus first: expected a CPU list such as 0,1 or 0-3$/],
    [['--batch-size', '64', '--batch-size-per-worker', '32'], /^bench: give one of --batch-size, --batch-sizes and --batch-size-per-worker, not --batch-size and --batch-size-per-worker$/],
    [['--ceiling', '--skip-ceiling'], /^bench: give --ceiling or --skip-ceiling, not both$/],
    [['--ceiling', '--cpus', '1'], /^bench: --ceiling runs two trainings at once: --cpus 1 gives them one CPU$/],
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
      // By default with workers=2: one of the two in the coordinator's process.
      ['w2-inproc', true, 2],
    ],
  );
  for (const run of bench.runs) assert.match(run.command, /^taskset -c 0 /);
  assert.match(bench.runs[2].command, / --workers 2 .* --in-process-worker$/);
  assert.doesNotMatch(bench.runs[1].command, /--in-process-worker/);

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
  const [, , w2inProcess] = bench.runs.map((run) => run.result!.train_samples_per_s);
  assert.equal(cells('workers=2 --in-process-worker')[column], (w2inProcess / w1).toFixed(2));
  assert.match(md, /workers=2 --in-process-worker \/ workers=1 ≥ 1\.7×\s*\|\s*\d\.\d\d×/);
});

interface Run {
  id: string;
  ok: boolean;
  command: string;
  result?: { train_samples_per_s: number; batch?: { global: number; per_worker: number } };
}
interface Pair {
  id: string;
  ok: boolean;
  at_once: true;
  train_samples_per_s: number;
  runs: [Run, Run];
}

test('bench: --batch-size-per-worker runs ours with weak scaling, and the ceiling rows add up two runs at once', async () => {
  const out = join(tempDir(), 'bench');
  const r = await runCli(BENCH, [...(hasTorch ? [] : ['--skip-reference']), '--workers', '1,2', '--skip-in-process', '--batch-size-per-worker', '32', '--train-limit', '640', '--out', out], {
    timeoutMs: 180_000,
  });
  assert.equal(r.code, 0, r.stderr);
  const bench = readJson<{ runs: Array<Run | Pair>; ceiling: { pair_over_workers1: number } }>(join(out, 'bench.json'));
  const ours = bench.runs.filter((run) => !run.id.startsWith('ref-'));
  assert.deepEqual(
    ours.map((run) => ('runs' in run ? [run.id, run.ok, run.runs.map((one) => [one.id, one.ok, one.result?.batch?.global, one.result?.batch?.per_worker])] : [run.id, run.ok, run.result?.batch?.global, run.result?.batch?.per_worker])),
    [
      ['w1-weak32', true, 32, 32],
      ['w2-weak32', true, 64, 32],
      // The ceiling, on by default with workers=2: two single processes, each at the batch one worker computes.
      [
        'w0x2-weak32',
        true,
        [
          ['w0x2-a-weak32', true, 32, 32],
          ['w0x2-b-weak32', true, 32, 32],
        ],
      ],
    ],
  );
  for (const run of ours) for (const one of 'runs' in run ? run.runs : [run]) assert.match(one.command, / --batch-size-per-worker 32 /);
  const pair = ours[2] as Pair;
  assert.match(pair.runs[0].command, / --workers 0 /);
  assert.doesNotMatch(pair.runs[0].command, / --seed /);
  assert.match(pair.runs[1].command, / --workers 0 .* --seed 2$/);
  const sum = pair.runs[0].result!.train_samples_per_s + pair.runs[1].result!.train_samples_per_s;
  assert.ok(Math.abs(pair.train_samples_per_s - sum) < 1e-6, `${pair.train_samples_per_s} is not ${sum}`);

  const md = readFileSync(join(out, 'bench.md'), 'utf8');
  assert.match(md, /weak scaling: 32 samples per worker and step/);
  assert.match(md, /workers=2 \/ workers=1 ≥ 1\.6× \(weak scaling, 32 per worker\)\s*\|\s*\d\.\d\d×/);
  // The row shows the sum, its scaling column the sum over workers=1, and a line under the targets says the same.
  const row = (label: string): string[] => {
    const line = md.split('\n').find((l) => l.startsWith(`| ${label} `));
    assert.ok(line, `no ${label} row in\n${md}`);
    return line.split('|').map((c) => c.trim());
  };
  const header = row('run');
  const w1 = (ours[0] as Run).result!.train_samples_per_s;
  const ceilingRow = row('2 × workers=0 at once, 32 per worker');
  assert.equal(ceilingRow[header.indexOf('samples/s')], sum.toFixed(0));
  assert.equal(ceilingRow[header.indexOf('× workers=1')], (sum / w1).toFixed(2));
  assert.match(ceilingRow[header.indexOf('test accuracy')], /^\d+\.\d\d% \/ \d+\.\d\d%$/);
  assert.ok(md.includes(`two-core ceiling: 2 × workers=0 at once = ${(sum / w1).toFixed(2)}× workers=1; the target for workers=2 is 1.6×`), md);
  assert.equal(bench.ceiling.pair_over_workers1, sum / w1);

  if (hasTorch) {
    // The reference's pair: two 1-thread processes at once, against its 2 threads.
    const refs = bench.runs.filter((run) => run.id.startsWith('ref-'));
    assert.deepEqual(
      refs.map((run) => run.id),
      ['ref-t2-weak32', 'ref-t1-weak32', 'ref-t1x2-weak32'],
    );
    const refPair = refs[2] as Pair;
    for (const one of refPair.runs) assert.match(one.command, /reference_mnist\.py --threads 1 --batch-size 32 /);
    const refSum = refPair.runs[0].result!.train_samples_per_s + refPair.runs[1].result!.train_samples_per_s;
    assert.ok(Math.abs(refPair.train_samples_per_s - refSum) < 1e-6);
    const ref2 = (refs[0] as Run).result!.train_samples_per_s;
    assert.equal(row('2 × reference 1 thread at once, 32 per worker')[header.indexOf('samples/s')], refSum.toFixed(0));
    assert.ok(md.includes(`PyTorch: 2 × 1 thread at once = `) && md.includes(`${(refSum / ref2).toFixed(2)}× its 2 threads`), md);
  }
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
