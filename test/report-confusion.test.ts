import { test } from 'node:test';
import assert from 'node:assert/strict';
import pngjs from 'pngjs';
import {
  confusionMatrix, confusionMatrixHtml, confusionStats, renderConfusionMatrix,
} from '../src/report/confusion.js';

const { PNG } = pngjs;

test('confusionMatrix counts [true][pred] on a hand-made example', () => {
  const truth = [0, 0, 0, 1, 1, 2, 2, 2, 2];
  const pred = [0, 0, 1, 1, 2, 2, 2, 0, 2];
  const m = confusionMatrix(pred, truth, 3);
  assert.deepEqual(m, [
    [2, 1, 0],
    [0, 1, 1],
    [1, 0, 3],
  ]);
  const s = confusionStats(m);
  assert.equal(s.total, 9);
  assert.equal(s.correct, 6);
  assert.equal(s.accuracy, 6 / 9);
  assert.deepEqual(s.rowTotals, [3, 2, 4]);
  assert.deepEqual(s.colTotals, [3, 2, 4]);
  assert.deepEqual(s.recall, [2 / 3, 1 / 2, 3 / 4]);
  assert.deepEqual(s.precision, [2 / 3, 1 / 2, 3 / 4]);
});

test('confusionMatrix: typed arrays, default 10 classes, validation', () => {
  const m = confusionMatrix(new Int32Array([9, 9, 3]), new Uint8Array([9, 1, 3]));
  assert.equal(m.length, 10);
  assert.ok(m.every((r) => r.length === 10));
  assert.equal(m[9]![9], 1);
  assert.equal(m[1]![9], 1);
  assert.equal(m[3]![3], 1);
  assert.equal(m.flat().reduce((a, b) => a + b, 0), 3);
  assert.throws(() => confusionMatrix([1, 2], [1]), RangeError);
  assert.throws(() => confusionMatrix([10], [1]), RangeError);
  assert.throws(() => confusionMatrix([1], [-1]), RangeError);
  assert.throws(() => confusionMatrix([0.5], [0]), RangeError);
  assert.deepEqual(confusionMatrix([], [], 2), [[0, 0], [0, 0]]);
});

test('renderConfusionMatrix: PNG with coloured diagonal and error cells', () => {
  const m = confusionMatrix([0, 0, 1, 1, 1, 2, 0], [0, 0, 1, 1, 1, 2, 2], 3);
  const img = PNG.sync.read(renderConfusionMatrix(m, { cellSize: 60 }));
  assert.ok(img.width >= 3 * 60 && img.height >= 3 * 60);
  let blue = 0;
  let red = 0;
  for (let i = 0; i < img.data.length; i += 4) {
    const [r, g, b] = [img.data[i]!, img.data[i + 1]!, img.data[i + 2]!];
    if (b > 90 && r < 60 && b - r > 60) blue++;
    if (r > 100 && r - g > 80 && r - b > 80) red++;
  }
  assert.ok(blue > 3000, `diagonal cells are blue (${blue})`);
  assert.ok(red > 1000, `off-diagonal error cell is red (${red})`);
  // 10-class default also renders, and an empty matrix does not throw
  assert.ok(PNG.sync.read(renderConfusionMatrix(confusionMatrix([1], [1]))).width > 300);
  assert.ok(PNG.sync.read(renderConfusionMatrix([])).width > 0);
});

test('confusionMatrixHtml: table with counts, totals and escaped class names', () => {
  const m = [[5, 1], [2, 7]];
  const html = confusionMatrixHtml(m, ['<cat>', 'dog & co']);
  assert.match(html, /^<table class="confusion">/);
  assert.ok(html.includes('&lt;cat&gt;'));
  assert.ok(!html.includes('<cat>'));
  assert.ok(html.includes('dog &amp; co'));
  const cells = [...html.matchAll(/<td[^>]*>([^<]*)<\/td>/g)].map((x) => x[1]);
  // row 0: 5, 1, total 6, recall; row 1: 2, 7, total 9, recall
  assert.deepEqual(cells.slice(0, 3), ['5', '1', '6']);
  assert.deepEqual(cells.slice(4, 7), ['2', '7', '9']);
  assert.ok(html.includes('80.0%'), 'accuracy 12/15 shown');
  assert.equal((html.match(/<tr>/g) ?? []).length, 1 + 2 + 1);
});
