import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pngjs from 'pngjs';
import { writeRunReport, runReportHtml, objectTableHtml, escapeHtml } from '../src/report/html.js';
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
    // tables
    assert.ok(html.includes('<th scope="row">nested.optimizer</th><td>sgd</td>'));
    assert.ok(html.includes('<th scope="row">test_accuracy</th><td>0.9876</td>'));
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
  const t = objectTableHtml({ arr: [1, 'a'], obj: [{ a: 1 }], nil: null, multi: 'a\nb' });
  assert.ok(t.includes('<td>1, a</td>'));
  assert.ok(t.includes('<pre>'));
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
