import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import jpeg from 'jpeg-js';
import pngjs from 'pngjs';
import { IMAGE_PIXELS, IMAGE_SIZE, loadMnist } from '../src/data/mnist.js';
import { DIGIT_BOX, decodeImage, resample, toMnistSample } from '../src/study/digit-image.js';
import type { EvaluationReport } from '../src/study/evaluate.js';
import { forwardImages, loadRun } from '../src/study/run-model.js';
import { COORDINATOR, readJson, runCli, tempDir } from './helpers.js';

const { PNG } = pngjs;
const SAMPLES = 12;

/** A w×h gray canvas with `fill`, as RGBA. */
function canvas(w: number, h: number, fill: number): { width: number; height: number; data: Buffer } {
  const data = Buffer.alloc(w * h * 4, 255);
  for (let i = 0; i < w * h; i++) data[4 * i] = data[4 * i + 1] = data[4 * i + 2] = fill;
  return { width: w, height: h, data };
}

/** Draws a 28×28 MNIST digit into `img` at (x, y), each pixel as a scale×scale block, optionally inverted. */
function drawDigit(img: { width: number; data: Buffer }, digit: Uint8Array, x: number, y: number, scale: number, invert: boolean): void {
  for (let r = 0; r < IMAGE_SIZE * scale; r++) {
    for (let c = 0; c < IMAGE_SIZE * scale; c++) {
      const v = digit[Math.floor(r / scale) * IMAGE_SIZE + Math.floor(c / scale)];
      const o = 4 * ((y + r) * img.width + x + c);
      img.data[o] = img.data[o + 1] = img.data[o + 2] = invert ? 255 - v : v;
    }
  }
}

function pngBytes(img: { width: number; height: number; data: Buffer }): Buffer {
  const png = new PNG({ width: img.width, height: img.height });
  img.data.copy(png.data);
  return PNG.sync.write(png);
}

const gray = (w: number, h: number, f: (x: number, y: number) => number) => {
  const pixels = new Float32Array(w * h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) pixels[y * w + x] = f(x, y);
  return { width: w, height: h, pixels };
};

test('MNIST preprocessing: MNIST digits come out unchanged; boxes, aspect ratio, centre of mass, inversion', () => {
  const { test: t } = loadMnist({ trainLimit: 1, testLimit: 300 });
  for (let i = 0; i < t.count; i++) {
    const digit = t.images.subarray(i * IMAGE_PIXELS, (i + 1) * IMAGE_PIXELS);
    const s = toMnistSample({ width: IMAGE_SIZE, height: IMAGE_SIZE, pixels: Float32Array.from(digit) });
    assert.deepEqual(s.pixels, new Uint8Array(digit), `test image #${i}`);
    assert.equal(s.inverted, false);
  }
  // A dark 10×40 bar on white paper, off centre: inverted, scaled to 5×20, centred.
  const s = toMnistSample(gray(100, 80, (x, y) => (x >= 5 && x < 15 && y >= 30 && y < 70 ? 0 : 255)));
  assert.equal(s.inverted, true);
  assert.deepEqual(s.box, { x: 5, y: 30, width: 10, height: 40 });
  const on: Array<[number, number]> = [];
  s.pixels.forEach((v, i) => v > 0 && on.push([i % IMAGE_SIZE, Math.floor(i / IMAGE_SIZE)]));
  assert.equal(on.length, 5 * DIGIT_BOX);
  // centre of mass (2, 9.5) in the 5×20 picture goes to (14, 14), rounded: (12, 5) is the top left
  assert.ok(on.every(([x, y]) => x >= 12 && x < 17 && y >= 5 && y < 25), JSON.stringify(on));
  assert.ok(s.pixels.every((v) => v === 0 || v === 255));
  // Gray paper with noise: the background goes to black.
  const noisy = toMnistSample(gray(60, 60, (x, y) => (Math.abs(x - 30) < 3 && y > 10 && y < 50 ? 30 : 200 + ((x * 7 + y * 13) % 5))));
  assert.equal(noisy.inverted, true);
  assert.equal(noisy.box.height, 39);
  assert.ok(Math.max(...noisy.pixels) >= 200);
  // Shrinking averages areas; enlarging interpolates; the same size is the identity.
  assert.deepEqual([...resample(Float32Array.from([0, 4, 8, 12]), 4, 1, 2, 1)], [2, 10]);
  assert.deepEqual([...resample(Float32Array.from([1, 2, 3]), 3, 1, 3, 1)], [1, 2, 3]);
  assert.deepEqual([...resample(Float32Array.from([0, 8]), 1, 2, 1, 4)], [0, 2, 6, 8]);
  assert.throws(() => toMnistSample(gray(20, 20, () => 255)), /no digit found/);
  assert.throws(() => decodeImage(Buffer.from('GIF89a...')), /not a PNG or JPEG file/);
});

test('evaluate and predict: a briefly trained model, on the test set and on MNIST digits written as pictures', async () => {
  const root = tempDir('mnist-evaluate-');
  const run = join(root, 'run');
  let r = await runCli(COORDINATOR, ['--workers', '0', '--epochs', '1', '--train-limit', '1500', '--test-limit', '300', '--lr', '0.05', '--momentum', '0.9', '--out', run], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr);
  const summary = readJson<{ test_correct: number; test_count: number; test_accuracy: number }>(join(run, 'summary.json'));

  // evaluate: the same test set as the run by default, so the same accuracy
  r = await runCli(COORDINATOR, ['evaluate', '--run', run], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^Accuracy: ${summary.test_correct}/${summary.test_count} \\(${(100 * summary.test_accuracy).toFixed(2)}%\\), average loss \\d+\\.\\d{4}$`, 'm'));
  assert.match(r.stdout, /^digit {2}samples {2}correct {2}accuracy {2}precision$/m);
  assert.match(r.stdout, /^true\\pred +0 +1 +2 +3 +4 +5 +6 +7 +8 +9 +total$/m);
  assert.match(r.stdout, new RegExp(`^ +total( +\\d+){10} +${summary.test_count}$`, 'm'));
  const report = readJson<EvaluationReport>(join(run, 'evaluation.json'));
  assert.equal(report.count, summary.test_count);
  assert.equal(report.correct, summary.test_correct);
  assert.equal(report.confusion.flat().reduce((a, b) => a + b, 0), report.count);
  assert.equal(report.confusion.reduce((a, row, i) => a + row[i], 0), report.correct);
  assert.equal(report.per_class.reduce((a, c) => a + c.count, 0), report.count);
  for (const c of report.per_class) {
    assert.equal(c.correct, report.confusion[c.digit][c.digit]);
    assert.equal(c.accuracy, c.count > 0 ? c.correct / c.count : null);
  }
  r = await runCli(COORDINATOR, ['evaluate', '--run', run, '--test-limit', '50', '--json'], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.equal((JSON.parse(r.stdout) as EvaluationReport).count, 50);

  // predict: the first test digits as pictures, some as they are, some inverted (dark on
  // light), some three times larger and off centre on white paper, some as JPEG.
  const { test: t } = loadMnist({ trainLimit: 1, testLimit: SAMPLES });
  const pictures = join(root, 'pictures');
  mkdirSync(pictures);
  const files: string[] = [];
  const original: number[] = [];
  for (let i = 0; i < SAMPLES; i++) {
    const digit = t.images.subarray(i * IMAGE_PIXELS, (i + 1) * IMAGE_PIXELS);
    const plain = canvas(IMAGE_SIZE, IMAGE_SIZE, 0);
    drawDigit(plain, digit, 0, 0, 1, false);
    const inverted = canvas(IMAGE_SIZE, IMAGE_SIZE, 255);
    drawDigit(inverted, digit, 0, 0, 1, true);
    const big = canvas(150, 110, 255);
    drawDigit(big, digit, 5 + 4 * i, 20, 3, true);
    const variants: Array<[string, Buffer]> = [
      [`${i}-plain.png`, pngBytes(plain)],
      [`${i}-inverted.png`, pngBytes(inverted)],
      [`${i}-big.png`, pngBytes(big)],
      [`${i}-big.jpg`, jpeg.encode(big, 95).data],
    ];
    for (const [name, bytes] of variants) {
      writeFileSync(join(pictures, name), bytes);
      files.push(join(pictures, name));
      original.push(i);
    }
  }
  r = await runCli(COORDINATOR, ['predict', '--run', run, '--json', ...files], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr);
  const predictions = JSON.parse(r.stdout) as Array<{ file: string; digit: number; probabilities: number[]; inverted: boolean }>;
  assert.equal(predictions.length, files.length);

  // What the model says about the original images, in this process.
  const loaded = await loadRun(run);
  const direct = await forwardImages(loaded.model, loaded.weights, t.images.subarray(0, SAMPLES * IMAGE_PIXELS));
  predictions.forEach((p, k) => {
    const i = original[k];
    assert.equal(p.file, files[k]);
    assert.equal(p.digit, direct.predictions[i], `${p.file}: predicted ${p.digit}, on the original ${direct.predictions[i]}`);
    assert.equal(p.inverted, !p.file.endsWith('plain.png'));
    assert.equal(p.probabilities.length, 10);
    assert.ok(Math.abs(p.probabilities.reduce((a, b) => a + b, 0) - 1) < 1e-4);
    const want = [...direct.probabilities.subarray(i * 10, i * 10 + 10)];
    const tolerance = p.file.endsWith('.jpg') ? 0.1 : 1e-6;
    p.probabilities.forEach((v, d) => assert.ok(Math.abs(v - want[d]) <= tolerance, `${p.file} p(${d}) ${v} vs ${want[d]}`));
  });
  const correct = predictions.filter((p) => p.digit === t.labels[original[predictions.indexOf(p)]]).length;
  assert.ok(correct >= predictions.length / 2, `only ${correct}/${predictions.length} right: the model did not learn`);

  // The table: a header and one line per file with the digit and ten probabilities.
  r = await runCli(COORDINATOR, ['predict', '--run', run, files[0], files[3]], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.match(lines[0], /^file +digit +p\(0\) +p\(1\).* p\(9\)$/);
  assert.equal(lines.length, 3);
  assert.match(lines[1], new RegExp(`^${files[0]} +${direct.predictions[0]}( +[01]\\.\\d{4}){10}$`));

  // Errors name the file.
  const notImage = join(pictures, 'notes.txt');
  writeFileSync(notImage, 'hello');
  const blank = join(pictures, 'blank.png');
  writeFileSync(blank, pngBytes(canvas(40, 40, 255)));
  for (const [file, pattern] of [[notImage, /notes\.txt: not a PNG or JPEG file$/], [blank, /blank\.png: no digit found/], [join(pictures, 'none.png'), /none\.png: cannot read \(ENOENT\)$/]] as const) {
    r = await runCli(COORDINATOR, ['predict', '--run', run, files[0], file]);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr.trim(), pattern);
  }
  r = await runCli(COORDINATOR, ['predict', '--run', join(root, 'nowhere'), files[0]]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /--run .*nowhere: no such directory/);
});
