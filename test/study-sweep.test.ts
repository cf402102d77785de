import assert from 'node:assert/strict';
import { existsSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import pngjs from 'pngjs';
import { sweepGrid, runName, type SweepEntry } from '../src/study/sweep.js';
import { COORDINATOR, freePort, readJson, runCli, tempDir } from './helpers.js';

const { PNG } = pngjs;
// Deterministic, so that a run trained again gives the same weights.
const TINY = ['--workers', '0', '--epochs', '1', '--train-limit', '320', '--test-limit', '100', '--log-interval', '2', '--deterministic'];

test('sweep grid: every combination, first flag slowest, named by the varying flags only', () => {
  const grid = sweepGrid([
    { flag: 'batch-size', values: [50, 100] },
    { flag: 'lr', values: [0.001, 0.01, 0.01] },
    { flag: 'epochs', values: [3] },
  ]);
  assert.deepEqual(grid.map((p) => p.name), [
    'batch-size=50,lr=0.001', 'batch-size=50,lr=0.01', 'batch-size=100,lr=0.001', 'batch-size=100,lr=0.01',
  ]);
  assert.deepEqual(grid[1].values, { 'batch-size': 50, lr: 0.01, epochs: 3 });
  assert.deepEqual(grid[1].varied, { 'batch-size': 50, lr: 0.01 });
  assert.equal(sweepGrid([{ flag: 'lr', values: [0.1] }])[0].name, 'run');
  assert.equal(runName([['model', 'lenet'], ['data', 'a/b c']]), 'model=lenet,data=a_b_c');
});

test('bad lists: one-line usage error, exit status 2', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['--lr', '0.1,abc'], /^coordinator: error: option '--lr <lr>' argument '0\.1,abc' is invalid\. 'abc' must be a number > 0\.$/],
    [['--batch-size', '50,,100'], /--batch-size.*empty item/],
    [['--model', 'net,resnet'], /--model.*'resnet' must be one of net, lenet, strong/],
    [['--metrics', '10.1.2.3:9400'], /--metrics 10\.1\.2\.3:9400 reaches beyond this machine/],
  ];
  const out = join(tempDir('mnist-sweep-'), 'never');
  for (const [args, pattern] of cases) {
    const r = await runCli(COORDINATOR, ['sweep', ...args, '--out', out]);
    assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], pattern);
  }
  assert.ok(!existsSync(out), 'nothing written for bad flags');
});

test('a 2×1 sweep: runs, sweep.json, sweep.md, plots; run again it skips finished runs and resumes unfinished ones', async () => {
  const dir = join(tempDir('mnist-sweep-'), 'sweep');
  const r = await runCli(COORDINATOR, ['sweep', ...TINY, '--batch-size', '32,64', '--lr', '0.05', '--out', dir], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr);
  const names = ['batch-size=32', 'batch-size=64'];
  for (const name of names) {
    for (const f of ['summary.json', 'metrics.jsonl', 'report.html', 'loss.png', 'model/model.json']) {
      assert.ok(existsSync(join(dir, 'runs', name, f)), `${name}/${f} missing`);
    }
  }

  const entries = readJson<SweepEntry[]>(join(dir, 'sweep.json'));
  assert.equal(entries.length, 2);
  entries.forEach((e, i) => {
    assert.equal(e.name, names[i]);
    assert.equal(e.dir, `runs/${names[i]}`);
    assert.equal(e.status, 'finished');
    assert.deepEqual(e.varied, { 'batch-size': i === 0 ? 32 : 64 });
    assert.equal(e.flags['batch-size'], i === 0 ? 32 : 64);
    assert.equal(e.flags.lr, 0.05);
    assert.equal(e.flags.epochs, 1);
    assert.equal(e.flags.workers, 0);
    assert.equal(e.flags['train-limit'], 320);
    const summary = readJson<Record<string, unknown>>(join(dir, 'runs', names[i], 'summary.json'));
    assert.deepEqual(e.summary, summary);
    assert.equal((summary.config as { batchSize: number }).batchSize, i === 0 ? 32 : 64);
    assert.equal(summary.steps, i === 0 ? 10 : 5);
  });

  const md = readFileSync(join(dir, 'sweep.md'), 'utf8');
  assert.match(md, /every combination of `--batch-size` 32, 64/);
  assert.match(md, /Same for all: `--epochs 1 .*--lr 0\.05 .*--deterministic/);
  assert.ok(entries.every((e) => e.flags.deterministic === true && e.summary!.deterministic === true));
  assert.match(md, /^\| run \| --batch-size \| test accuracy \| test loss \| train time \(s\) \| samples\/s \| status \|$/m);
  for (const e of entries) {
    const s = e.summary!;
    const row = md.split('\n').find((l) => l.startsWith(`| [${e.name}](runs/${e.name}/report.html) |`));
    assert.ok(row, `no row for ${e.name}:\n${md}`);
    assert.ok(row.includes(`| ${(100 * s.test_accuracy).toFixed(2)}% | ${s.test_loss.toFixed(4)} |`), row);
    assert.ok(row.includes(`| ${s.train_samples_per_s.toFixed(0)} | finished |`), row);
  }

  for (const png of ['accuracy.png', 'loss.png', 'test-accuracy-curves.png']) {
    const img = PNG.sync.read(readFileSync(join(dir, png)));
    assert.ok(img.width >= 900 && img.height >= 400, `${png}: ${img.width}×${img.height}`);
  }

  // Again: nothing to train. Then with one run's summary gone and its checkpoint put back one
  // epoch (as if it was stopped), only that run trains, from its checkpoint.
  const finishedAt = entries.map((e) => e.summary!.finished_at);
  let again = await runCli(COORDINATOR, ['sweep', ...TINY, '--batch-size', '32,64', '--lr', '0.05', '--out', dir], { timeoutMs: 120_000 });
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /run 1\/2 batch-size=32: finished before, skipped/);
  assert.match(again.stdout, /run 2\/2 batch-size=64: finished before, skipped/);
  assert.doesNotMatch(again.stdout, /Train Epoch/);
  const reread = readJson<SweepEntry[]>(join(dir, 'sweep.json'));
  assert.deepEqual(reread.map((e) => e.summary!.finished_at), finishedAt);
  assert.ok(reread.every((e) => e.reused));

  const second = join(dir, 'runs', names[1]);
  rmSync(join(second, 'summary.json'));
  const sha = entries[1].summary!.weights_sha256;
  again = await runCli(COORDINATOR, ['sweep', ...TINY, '--batch-size', '32,64', '--lr', '0.05', '--out', dir], { timeoutMs: 120_000 });
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /run 1\/2 batch-size=32: finished before, skipped/);
  assert.match(again.stdout, /run 2\/2 batch-size=64: resuming from its checkpoint/);
  const resumed = readJson<SweepEntry[]>(join(dir, 'sweep.json'));
  assert.equal(resumed[1].status, 'finished');
  assert.equal(resumed[1].reused, false);
  assert.equal(resumed[1].summary!.weights_sha256, sha, 'the checkpoint holds the final weights');
  assert.ok(existsSync(join(second, 'summary.json')));

  // A run that stopped before its first checkpoint starts over.
  rmSync(join(second, 'summary.json'));
  renameSync(join(second, 'checkpoint.bin'), join(second, 'old-checkpoint.bin'));
  rmSync(join(second, 'checkpoint.prev.bin'), { force: true });
  again = await runCli(COORDINATOR, ['sweep', ...TINY, '--batch-size', '32,64', '--lr', '0.05', '--out', dir], { timeoutMs: 120_000 });
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /run 2\/2 batch-size=64: training/);
  const metrics = readFileSync(join(second, 'metrics.jsonl'), 'utf8').trim().split('\n');
  assert.equal(metrics.filter((l) => l.includes('"type":"test"')).length, 1, 'stale metrics were dropped');
  assert.equal(readJson<SweepEntry[]>(join(dir, 'sweep.json'))[1].summary!.weights_sha256, sha, 'same flags, same seed: same weights');
});

test('sweep --in-process-worker: runs with workers compute one share in the coordinator, a --workers 0 run trains alone, the same weights', async () => {
  const dir = join(tempDir('mnist-sweep-'), 'sweep');
  const flags = TINY.filter((f, i) => f !== '--workers' && TINY[i - 1] !== '--workers');
  const r = await runCli(COORDINATOR, ['sweep', ...flags, '--workers', '0,2', '--in-process-worker', '--out', dir], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.equal((r.stdout.match(/joined \(in this process: /g) ?? []).length, 1, r.stdout);
  const summary = (name: string) => readJson<{ weights_sha256: string; devices: { workers?: Array<{ id: string }> } }>(join(dir, 'runs', name, 'summary.json'));
  const [alone, two] = [summary('workers=0'), summary('workers=2')];
  assert.deepEqual(
    two.devices.workers?.map((w) => w.id.endsWith('-in-process')),
    [true, false],
  );
  assert.equal(two.weights_sha256, alone.weights_sha256);
});

test('sweep --metrics: each run serves /metrics while it trains, labelled with its name, on the same address', async () => {
  const dir = join(tempDir('mnist-sweep-'), 'sweep');
  const port = await freePort();
  // Runs long enough (10 epochs of 1024 samples) to be scraped a few times each.
  const flags = ['--workers', '0', '--epochs', '10', '--train-limit', '1024', '--test-limit', '100', '--log-interval', '1000', '--deterministic'];
  const sweep = runCli(COORDINATOR, ['sweep', ...flags, '--lr', '0.01,0.02', '--metrics', `127.0.0.1:${port}`, '--out', dir], { timeoutMs: 300_000 });
  let done = false;
  void sweep.then(() => (done = true));
  // Per run label seen: the most steps any scrape counted for it.
  const steps = new Map<string, number>();
  while (!done) {
    try {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      for (const m of text.matchAll(/^mnist_ddp_steps_total\{run="([^"]+)"\} (\d+)$/gm)) steps.set(m[1], Math.max(steps.get(m[1]) ?? 0, Number(m[2])));
      assert.doesNotMatch(text, /^mnist_ddp_steps_total \d/m, 'every series carries the run label');
    } catch (e) {
      if (e instanceof assert.AssertionError) throw e;
      // between runs, or before the first: nothing listens
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const r = await sweep;
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual([...steps.keys()].sort(), ['lr=0.01', 'lr=0.02'], `runs scraped: ${JSON.stringify([...steps])}`);
  for (const [run, n] of steps) assert.ok(n > 0, `${run}: steps counted`);
  // Serving changes nothing trained: the same weights as the run alone.
  const alone = join(tempDir('mnist-sweep-'), 'alone');
  const single = await runCli(COORDINATOR, [...flags, '--lr', '0.02', '--out', alone], { timeoutMs: 120_000 });
  assert.equal(single.code, 0, single.stderr);
  assert.equal(readJson<{ weights_sha256: string }>(join(dir, 'runs', 'lr=0.02', 'summary.json')).weights_sha256, readJson<{ weights_sha256: string }>(join(alone, 'summary.json')).weights_sha256);
});
