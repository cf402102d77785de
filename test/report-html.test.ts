import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pngjs from 'pngjs';
import { writeRunReport, runReportHtml, objectTableHtml, escapeHtml } from '../src/report/html.js';
import { engineLine, runHeadline } from '../src/report/fields.js';
import { formatBytes, formatDuration, formatLoss, formatMs, formatNumber, formatPercent, formatRate, formatTimestamp } from '../src/report/format.js';
import { parseMetricsJsonl, runPlotSpecs, writeRunPlots } from '../src/report/plots.js';
import type { MetricRecord } from '../src/report/types.js';

const { PNG } = pngjs;

async function withTmp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'report-test-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function metrics(epochs = 3, stepsPerEpoch = 30): MetricRecord[] {
  const out: MetricRecord[] = [];
  let step = 0;
  for (let e = 1; e <= epochs; e++) {
    for (let k = 0; k < stepsPerEpoch; k++) {
      step++;
      out.push({ type: 'train', epoch: e, step, samples: step * 64, loss: 2.3 * Math.exp(-step / 20) + 0.05 });
    }
    out.push({ type: 'test', epoch: e, step, test_loss: 0.3 / e, test_accuracy: 0.9 + 0.02 * e });
  }
  return out;
}

test('escapeHtml escapes the five special characters', () => {
  assert.equal(escapeHtml(`<a href="x">'&'</a>`), '&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;');
});

test('writeRunReport: img tags for existing files only, escaped config, tables', async () => {
  await withTmp(async (dir) => {
    const png = new PNG({ width: 2, height: 2 });
    await writeFile(join(dir, 'loss.png'), PNG.sync.write(png));
    await writeFile(join(dir, 'misclassified.png'), PNG.sync.write(png));
    await writeFile(join(dir, 'extra plot.png'), PNG.sync.write(png));
    const file = await writeRunReport(dir, {
      title: 'Run <1>',
      config: { lr: 0.05, workers: 4, note: '<script>alert("x")</script>', nested: { optimizer: 'sgd' }, '<k>': true },
      summary: { test_accuracy: 0.9876, wall_s: 12.5 },
      confusion: [[3, 1], [0, 4]],
      misclassifiedImage: 'misclassified.png',
      featureMapsImage: 'missing.png',
    });
    assert.equal(file, join(dir, 'report.html'));
    const html = await readFile(file, 'utf8');
    assert.match(html, /^<!DOCTYPE html>/);
    assert.ok(html.includes('<img src="loss.png"'), 'loss plot referenced');
    assert.ok(!html.includes('accuracy.png'), 'missing accuracy plot is not referenced');
    assert.ok(html.includes('<img src="misclassified.png"'));
    assert.ok(html.includes('<img src="extra%20plot.png"'), 'other PNGs are listed as plots, URL-encoded');
    assert.ok(!html.includes('missing.png'));
    assert.equal((html.match(/<img /g) ?? []).length, 3);
    assert.ok(html.indexOf('loss.png') < html.indexOf('extra%20plot.png'), 'loss.png comes first');
    // escaping
    assert.ok(!html.includes('<script>'), 'no raw script tag');
    assert.ok(html.includes('&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;'));
    assert.ok(html.includes('Run &lt;1&gt;'));
    assert.ok(html.includes('&lt;k&gt;'));
    // tables: a label, the field's name, the value rounded with its unit
    assert.ok(html.includes('<th scope="row">Nested (optimizer)<code class="key">nested.optimizer</code></th><td>sgd</td>'));
    assert.ok(html.includes('<th scope="row">Test accuracy<code class="key">test_accuracy</code></th><td>98.76 %</td>'));
    assert.ok(html.includes('<th scope="row">Wall<code class="key">wall_s</code></th><td>13 s</td>'));
    assert.ok(html.includes('<table class="confusion">'));
    // offline: no scripts, no external URLs
    assert.ok(!/<script/i.test(html));
    assert.ok(!/(src|href)="(https?:)?\/\//i.test(html));
  });
});

test('runReportHtml: explicit plot list, unsafe names ignored, empty report', () => {
  const html = runReportHtml({ plots: ['accuracy.png', '../etc/passwd', '/abs.png', 'gone.png'] }, ['accuracy.png', 'loss.png']);
  assert.ok(html.includes('<img src="accuracy.png"'));
  assert.ok(!html.includes('loss.png'), 'only the explicit list is used');
  assert.ok(!html.includes('passwd') && !html.includes('abs.png') && !html.includes('gone.png'));
  const empty = runReportHtml({}, []);
  assert.ok(empty.includes('(no plots)'));
  assert.equal(objectTableHtml({}), '<p class="empty">(none)</p>');
  const t = objectTableHtml({ arr: [1.23456789, 'a'], obj: [{ a: 1 }], nil: null, multi: 'a\nb' });
  assert.ok(t.includes('<td>1.235, a</td>'));
  assert.ok(t.includes('<pre>'));
  assert.ok(t.includes('<code class="key">nil</code></th><td>none</td>'));
});

test('writeRunPlots writes loss.png and accuracy.png that decode at 900×500', async () => {
  await withTmp(async (dir) => {
    const files = await writeRunPlots(join(dir, 'sub'), metrics());
    assert.deepEqual(files, ['loss.png', 'accuracy.png']);
    assert.deepEqual((await readdir(join(dir, 'sub'))).sort(), ['accuracy.png', 'loss.png']);
    for (const f of files) {
      const img = PNG.sync.read(await readFile(join(dir, 'sub', f)));
      assert.equal(img.width, 900);
      assert.equal(img.height, 500);
    }
    // nothing to plot → nothing written
    assert.deepEqual(await writeRunPlots(join(dir, 'empty'), []), []);
    // only train records → only loss.png
    assert.deepEqual(await writeRunPlots(join(dir, 'train-only'), metrics().filter((r) => r.type === 'train')), ['loss.png']);
  });
});

test('runPlotSpecs: x = samples seen, test points at end of epoch, accuracy in %', () => {
  const specs = runPlotSpecs(metrics(3, 30));
  assert.ok(specs.loss && specs.accuracy);
  const testLoss = specs.loss.series.find((s) => s.name === 'test loss')!;
  assert.deepEqual(testLoss.points.map((p) => p[0]), [30 * 64, 60 * 64, 90 * 64]);
  assert.equal(specs.loss.xLabel, 'training samples seen');
  assert.ok(specs.loss.logY, 'loss spanning > 20× uses a log axis');
  const acc = specs.accuracy.series[0]!;
  assert.deepEqual(acc.points.map((p) => p[0]), [1, 2, 3]);
  assert.ok(Math.abs(acc.points[2]![1] - 96) < 1e-9);
  // many train points: raw + smoothed
  assert.equal(runPlotSpecs(metrics(3, 100)).loss!.series.length, 3);
});

test('parseMetricsJsonl skips blank, malformed and unknown lines', () => {
  const text = [
    '{"type":"train","epoch":1,"step":1,"samples":64,"loss":2.3}',
    '',
    '{"type":"other","x":1}',
    'not json',
    '{"type":"test","epoch":1,"step":1,"test_loss":0.5,"test_accuracy":0.9}',
    '{"type":"train","epoch":1,"st',
  ].join('\n');
  const recs = parseMetricsJsonl(text);
  assert.equal(recs.length, 2);
  assert.equal(recs[0]!.type, 'train');
  assert.equal(recs[1]!.type, 'test');
});

test('numbers are rounded as a person reads them, with their units', () => {
  assert.equal(formatPercent(0.98214), '98.21 %');
  assert.equal(formatLoss(0.054231), '0.0542');
  assert.equal(formatLoss(2.259056368112564), '2.2591');
  assert.equal(formatLoss(0.000123456), '0.000123');
  assert.equal(formatRate(5875.31), '5,875 samples/s');
  assert.equal(formatRate(42.123), '42.1 samples/s');
  assert.equal(formatDuration(113.4), '1 min 53 s');
  assert.equal(formatDuration(0.6082890070000001), '608 ms');
  assert.equal(formatDuration(4.24), '4.2 s');
  assert.equal(formatDuration(59.6), '1 min 0 s');
  assert.equal(formatDuration(3725), '1 h 2 min');
  assert.equal(formatNumber(9768.702824276672), '9,769');
  assert.equal(formatNumber(2.758045421052645), '2.758');
  assert.equal(formatNumber(0.01), '0.01');
  assert.equal(formatNumber(60000), '60,000');
  assert.equal(formatNumber(NaN), 'NaN');
  assert.equal(formatMs(1558.9343354000005), '1,559 ms');
  assert.equal(formatMs(2.758045421052645), '2.76 ms');
  assert.equal(formatBytes(225394.45), '220 KiB');
  assert.equal(formatBytes(512), '512 B');
  assert.equal(formatBytes(177.7421875 * 2 ** 20), '178 MiB');
  assert.equal(formatTimestamp('2026-11-30T08:18:24.010Z'), '2026-11-30 08:18:24 UTC');
  assert.equal(formatTimestamp('not a date'), 'not a date');
});

const H200 = { vendor: 'nvidia', architecture: 'hopper', device: '0x2335', description: 'NVIDIA H200', software: false };

/** A summary as a distributed run on two GPUs writes it. */
function gpuSummary(): Record<string, unknown> {
  return {
    test_accuracy: 0.9821, test_loss: 0.054231, test_correct: 9821, test_count: 10000, epochs: 10, steps: 9380, workers: 2,
    model: 'net', backend: 'webgpu',
    devices: {
      coordinator: { backend: 'webgpu', device: 'gpu NVIDIA H200, fused kernels', adapter: H200 },
      workers: [0, 1].map((i) => ({ id: `pod-${i}`, backend: 'webgpu', device: 'gpu NVIDIA H200, fused kernels', adapter: { ...H200 } })),
    },
    deterministic: false, train_samples_per_s: 5875.31, train_seconds: 113.4, peak_rss_mb: 177.7421875, samples_seen: 600000,
    weights_sha256: 'fd223c14903e9ac8adf043a575115f69a5aaf4f843c43c1c0b0d9a143265b705', worker_failures: 0,
    momentum: { start: 0.5, final: null, ramp_steps: null }, interrupted: false,
    distributed: { bytes_sent_per_step: 225394.45, coordinator_ms_per_step: 9768.702824276672, step_overhead_ms: { median: 1.2345678, p90: 3.456789 } },
    finished_at: '2026-11-30T08:18:24.010Z',
  };
}

test('headline: accuracy, loss, samples/s, training time, workers and engine with the GPU adapter', () => {
  const h = runHeadline(gpuSummary());
  assert.deepEqual(h.map((f) => [f.id, f.value, f.unit]), [
    ['accuracy', '98.21', '%'],
    ['loss', '0.0542', undefined],
    ['throughput', '5,875', 'samples/s'],
    ['time', '1 min 53 s', undefined],
    ['engine', '2 workers · webgpu on NVIDIA H200', undefined],
  ]);
  assert.equal(h[0]!.detail, '9,821 of 10,000 test images');
  assert.equal(h[3]!.detail, '10 epochs, evaluation excluded');
  // single node on the CPU; a coordinator's adapter when the workers name none; two kinds of GPU
  assert.equal(engineLine({ workers: 0, backend: 'wasm', devices: { coordinator: { backend: 'wasm', device: 'cpu' }, workers: [] } }), 'single node · wasm');
  assert.equal(engineLine({ workers: 1, backend: 'webgpu', devices: { coordinator: { backend: 'webgpu', device: 'gpu', adapter: H200 }, workers: [{ backend: 'webgpu', device: 'gpu' }] } }), '1 worker · webgpu on NVIDIA H200');
  const mixed = gpuSummary();
  (mixed.devices as { workers: Array<{ adapter: { description: string } }> }).workers[1]!.adapter.description = 'NVIDIA A100';
  assert.equal(engineLine(mixed), '2 workers · webgpu on NVIDIA H200, NVIDIA A100');
  assert.equal(engineLine({ workers: 0, backend: 'webgpu', devices: { coordinator: { backend: 'webgpu', device: 'gpu', adapter: { ...H200, description: '' } }, workers: [] } }), 'single node · webgpu on 0x2335');
  assert.deepEqual(runHeadline({}), []);
  assert.deepEqual(runHeadline(undefined), []);
});

/** Every leaf of an object as "a.b.c" (arrays whole). */
function leafKeys(obj: Record<string, unknown>, prefix = ''): string[] {
  return Object.entries(obj).flatMap(([k, v]) => {
    const key = prefix ? `${prefix}.${k}` : k;
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? leafKeys(v as Record<string, unknown>, key) : v === undefined ? [] : [key];
  });
}

test('runReportHtml: headline first, then plots, then every summary and configuration field grouped, labelled and rounded', () => {
  const summary = gpuSummary();
  const config = { model: 'net', batchSize: 64, testBatchSize: 1000, epochs: 10, lr: 0.01, momentum: 0.5, seed: 1, logInterval: 10, noCuda: false, engine: 'auto', workers: 2, deterministic: false, shardSize: 16, outDir: 'runs/x', checkpointEvery: 0, augment: false, lrSchedule: 'constant', trainLimit: undefined, dataDir: undefined, gradDtype: 'bfloat16' };
  const html = runReportHtml({ title: 'Run', summary, config, plots: ['loss.png', 'accuracy.png'] }, ['loss.png', 'accuracy.png', 'summary.json', 'metrics.jsonl']);
  const at = (s: string): number => {
    const i = html.indexOf(s);
    assert.ok(i >= 0, `no ${s}`);
    return i;
  };
  assert.ok(at('id="headline"') < at('id="plots"') && at('id="plots"') < at('id="summary"') && at('id="summary"') < at('id="config"'));
  assert.ok(at('id="stat-accuracy"') < at('id="stat-engine"'));
  assert.ok(html.includes('<dd class="value">98.21<span class="unit"> %</span></dd>'));
  assert.ok(html.includes('<dd class="value">2 workers · webgpu on NVIDIA H200</dd>'));
  assert.ok(html.includes('finished 2026-11-30 08:18:24 UTC'));
  // groups in order, human labels, units
  for (const g of ['Results', 'Training', 'Engine and devices', 'Distributed', 'Run', 'Data']) assert.ok(html.includes(`<h3>${g}</h3>`), `no group ${g}`);
  for (const [label, value] of [
    ['Sent to workers per step', '220 KiB'], ['Coordinator time per step', '9,769 ms'], ['Step overhead (median)', '1.23 ms'], ['Step overhead (p90)', '3.46 ms'],
    ['Training throughput', '5,875 samples/s'], ['Training time (evaluation excluded)', '1 min 53 s'], ['Coordinator peak memory', '178 MiB'],
    ['Momentum at the end', 'constant'], ['Learning rate', '0.01'], ['Training samples used', 'all'], ['Data folder', 'the bundled MNIST'],
    ['Checkpoint every', 'epoch end only'], ['Grad dtype', 'bfloat16'],
  ]) {
    const re = (x: string): string => x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    assert.match(html, new RegExp(`>${re(label)}<code class="key">[^<]+</code></th><td[^>]*>${re(value)}</td>`), `${label}: ${value}`);
  }
  assert.match(html, /Worker 2 \(pod-1\)<code class="key">devices.workers\[1\]<\/code><\/th><td><span class="line">webgpu · gpu NVIDIA H200, fused kernels<\/span><span class="line">GPU: NVIDIA H200 \(vendor nvidia, architecture hopper, device 0x2335\)<\/span><\/td>/);
  // every field can still be found by its name, and no number shows its 16 digits
  for (const key of leafKeys(summary).filter((k) => !k.startsWith('devices.'))) assert.ok(html.includes(`<code class="key">${key}</code>`), `summary field ${key} is missing`);
  for (const key of ['devices.coordinator', 'devices.workers[0]', 'devices.workers[1]']) assert.ok(html.includes(`<code class="key">${key}</code>`), key);
  for (const key of leafKeys(config)) assert.ok(html.includes(`<code class="key">${key}</code>`), `config field ${key} is missing`);
  assert.doesNotMatch(html, /\d\.\d{6,}/);
  assert.ok(html.includes('<a href="summary.json">') && html.includes('<a href="metrics.jsonl">'));
  assert.ok(!html.includes('This run was interrupted'));
  assert.ok(runReportHtml({ summary: { ...summary, interrupted: true } }, []).includes('This run was interrupted'));
});

test('runReportHtml escapes what a run names: device and adapter names, worker ids, field names', () => {
  const evil = '<img src=x onerror=alert(1)>';
  const summary = gpuSummary();
  summary.devices = { coordinator: { backend: evil, device: evil, adapter: { ...H200, description: evil } }, workers: [{ id: evil, backend: 'webgpu', device: evil, adapter: { ...H200, description: evil, vendor: evil } }] };
  summary[evil] = { [evil]: evil };
  const html = runReportHtml({ summary, config: { [evil]: evil, outDir: evil } }, []);
  assert.ok(!html.includes('<img'), 'no raw tag');
  assert.ok(html.includes(`2 workers · webgpu on ${escapeHtml(evil)}`));
  assert.ok(html.includes(escapeHtml(`${evil}.${evil}`)));
});
