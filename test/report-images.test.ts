import { test } from 'node:test';
import assert from 'node:assert/strict';
import pngjs from 'pngjs';
import {
  channelsToCells, featureMapGridSpec, imageGridLayout, misclassifiedGridSpec, renderImageGrid,
} from '../src/report/images.js';

const { PNG } = pngjs;
const decode = (b: Buffer): { width: number; height: number; data: Buffer } => PNG.sync.read(b);
const px = (img: { width: number; data: Buffer }, x: number, y: number): number[] =>
  [...img.data.subarray((y * img.width + x) * 4, (y * img.width + x) * 4 + 4)];

test('image grid: exact size without captions/labels and nearest-neighbour upscaling', () => {
  // 2×2 image [[0, 1], [2, 3]] normalised by its own min/max → 0, 85, 170, 255
  const cell = { pixels: new Float32Array([0, 1, 2, 3]), width: 2, height: 2 };
  const img = decode(renderImageGrid({ rows: [{ cells: [cell, cell, cell] }, { cells: [cell] }], scale: 3, padding: 0, gap: 0, rowGap: 0 }));
  assert.equal(img.width, 3 * 2 * 3);
  assert.equal(img.height, 2 * 2 * 3);
  // first cell, each source pixel covers a 3×3 block
  for (let y = 0; y < 3; y++) for (let x = 0; x < 3; x++) {
    assert.deepEqual(px(img, x, y), [0, 0, 0, 255]);
    assert.deepEqual(px(img, 3 + x, y), [85, 85, 85, 255]);
    assert.deepEqual(px(img, x, 3 + y), [170, 170, 170, 255]);
    assert.deepEqual(px(img, 3 + x, 3 + y), [255, 255, 255, 255]);
  }
  // second row has one cell, the rest is white background
  assert.deepEqual(px(img, 0, 6), [0, 0, 0, 255]);
  assert.deepEqual(px(img, 17, 8), [255, 255, 255, 255]);
});

test('image grid: dimensions follow padding, gap, scale and rows', () => {
  const u8 = new Uint8Array(28 * 28).map((_, i) => i % 256);
  const cell = { pixels: u8, width: 28, height: 28 };
  const rows = Array.from({ length: 3 }, () => ({ cells: Array.from({ length: 5 }, () => cell) }));
  const img = decode(renderImageGrid({ rows, scale: 2, padding: 10, gap: 4 }));
  assert.equal(img.width, 2 * 10 + 5 * 56 + 4 * 4);
  assert.equal(img.height, 2 * 10 + 3 * 56 + 2 * 4);
  // wrapping with maxColumns: 5 cells in lines of 2 → 3 lines per row
  const wrapped = decode(renderImageGrid({ rows: [rows[0]!], scale: 1, padding: 0, gap: 2, maxColumns: 2 }));
  assert.equal(wrapped.width, 2 * 28 + 2);
  assert.equal(wrapped.height, 3 * 28 + 2 * 2);
});

test('image grid: fixed range, invert, NaN and constant images', () => {
  const cells = [
    { pixels: [0, 0.5, 1, 2], width: 4, height: 1, range: [0, 1] as [number, number] },
    { pixels: [5, 5, 5, 5], width: 4, height: 1 },
    { pixels: [NaN, 1, 2, 3], width: 4, height: 1 },
  ];
  const img = decode(renderImageGrid({ rows: [{ cells }], scale: 1, padding: 0, gap: 0 }));
  assert.equal(img.width, 12);
  assert.deepEqual(px(img, 1, 0).slice(0, 3), [128, 128, 128]);
  assert.deepEqual(px(img, 3, 0).slice(0, 3), [255, 255, 255], 'values above the range are clamped');
  assert.deepEqual(px(img, 5, 0).slice(0, 3), [0, 0, 0], 'constant image is black');
  assert.deepEqual(px(img, 8, 0).slice(0, 3), [255, 0, 255], 'NaN is magenta');
  const inv = decode(renderImageGrid({ rows: [{ cells: [cells[0]!] }], scale: 1, padding: 0, gap: 0, invert: true }));
  assert.deepEqual(px(inv, 0, 0).slice(0, 3), [255, 255, 255]);
});

test('image grid: captions, labels and title enlarge the image and add text', () => {
  const cell = { pixels: new Float32Array(28 * 28).fill(0), width: 28, height: 28 };
  const plain = decode(renderImageGrid({ rows: [{ cells: [cell, cell] }] }));
  const spec = misclassifiedGridSpec([
    { pixels: cell.pixels, width: 28, height: 28, pred: 3, truth: 5 },
    { pixels: cell.pixels, width: 28, height: 28, pred: 1, truth: 7 },
  ]);
  assert.equal(spec.rows[0]!.cells[0]!.caption, 'pred 3 / true 5');
  const captioned = decode(renderImageGrid(spec));
  assert.ok(captioned.height > plain.height + 20, 'caption band and title add height');
  assert.ok(captioned.width > plain.width, 'captions widen the slots');
  const layout = imageGridLayout(spec);
  assert.equal(captioned.width, layout.width);
  assert.equal(captioned.height, layout.height);
  const labelled = decode(renderImageGrid({ rows: [{ label: 'conv1', cells: [cell] }] }));
  assert.ok(labelled.width > decode(renderImageGrid({ rows: [{ cells: [cell] }] })).width);
  // caption text is drawn below the image: grey pixels exist under the images
  let grey = 0;
  for (let i = 0; i < captioned.data.length; i += 4) {
    const v = captioned.data[i]!;
    if (v > 40 && v < 200 && captioned.data[i + 1] === v) grey++;
  }
  assert.ok(grey > 30, 'caption text pixels present');
});

test('image grid: invalid cells throw, empty grid still renders', () => {
  assert.throws(() => renderImageGrid({ rows: [{ cells: [{ pixels: [1, 2, 3], width: 2, height: 2 }] }] }), RangeError);
  assert.throws(() => renderImageGrid({ rows: [{ cells: [{ pixels: [], width: 0, height: 2 }] }] }), RangeError);
  const empty = decode(renderImageGrid({ rows: [] }));
  assert.ok(empty.width > 0 && empty.height > 0);
});

test('feature maps: channel split (hwc/chw) and grid spec', () => {
  // 2×2 spatial, 3 channels, value = 10*channel + position
  const hwc = new Float32Array(12);
  const chw = new Float32Array(12);
  for (let p = 0; p < 4; p++) for (let c = 0; c < 3; c++) {
    hwc[p * 3 + c] = 10 * c + p;
    chw[c * 4 + p] = 10 * c + p;
  }
  for (const [data, layout] of [[hwc, 'hwc'], [chw, 'chw']] as const) {
    const cells = channelsToCells(data, 2, 2, 3, layout, 'c');
    assert.equal(cells.length, 3);
    assert.deepEqual([...cells[2]!.pixels as Float32Array], [20, 21, 22, 23]);
    assert.equal(cells[1]!.caption, 'c1');
  }
  const spec = featureMapGridSpec([{
    label: '#0', input: { pixels: new Float32Array(28 * 28), width: 28, height: 28 },
    layers: [
      { name: 'conv1', data: new Float32Array(26 * 26 * 4), height: 26, width: 26, channels: 4 },
      { name: 'conv2', data: new Float32Array(11 * 11 * 8), height: 11, width: 11, channels: 8 },
    ],
  }], { maxColumns: 6 });
  assert.equal(spec.rows.length, 1);
  assert.equal(spec.rows[0]!.cells.length, 1 + 4 + 8);
  assert.equal(spec.rows[0]!.cells[0]!.caption, 'input');
  assert.equal(spec.rows[0]!.cells[5]!.caption, 'conv2 #0');
  const img = decode(renderImageGrid(spec));
  const L = imageGridLayout(spec);
  assert.equal(img.width, L.width);
  assert.equal(img.height, L.height);
  assert.equal(L.cols, 6);
});
