import { test } from 'node:test';
import assert from 'node:assert/strict';
import pngjs from 'pngjs';
import { renderBarChart, renderLineChart, PALETTE } from '../src/report/chart.js';
import { niceTicks, logTicks, tickFormatter } from '../src/report/draw.js';

const { PNG } = pngjs;

function decode(buf: Buffer): { width: number; height: number; data: Buffer } {
  assert.ok(Buffer.isBuffer(buf), 'renderer returns a Buffer');
  assert.deepEqual([...buf.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'PNG signature');
  return PNG.sync.read(buf);
}

function hex(c: string): [number, number, number] {
  return [parseInt(c.slice(1, 3), 16), parseInt(c.slice(3, 5), 16), parseInt(c.slice(5, 7), 16)];
}

/** Pixels that are not (near) white. */
function nonBackground(img: { data: Buffer }): number {
  let n = 0;
  for (let i = 0; i < img.data.length; i += 4) {
    if (img.data[i]! < 245 || img.data[i + 1]! < 245 || img.data[i + 2]! < 245) n++;
  }
  return n;
}

/** Pixels within `tol` of colour c, optionally inside a rectangle. */
function countColor(
  img: { width: number; data: Buffer }, c: string, tol = 12,
  rect?: { x0: number; y0: number; x1: number; y1: number },
): number {
  const [r, g, b] = hex(c);
  let n = 0;
  for (let i = 0; i < img.data.length; i += 4) {
    const p = i / 4;
    const x = p % img.width;
    const y = Math.floor(p / img.width);
    if (rect && (x < rect.x0 || x >= rect.x1 || y < rect.y0 || y >= rect.y1)) continue;
    if (Math.abs(img.data[i]! - r) <= tol && Math.abs(img.data[i + 1]! - g) <= tol && Math.abs(img.data[i + 2]! - b) <= tol) n++;
  }
  return n;
}

const sine = (n: number, f: (x: number) => number): [number, number][] =>
  Array.from({ length: n }, (_, i) => [i, f(i)] as [number, number]);

test('line chart: default size, white background, series colours drawn', () => {
  const img = decode(renderLineChart({
    title: 'Loss', xLabel: 'step', yLabel: 'loss',
    series: [
      { name: 'train', points: sine(200, (x) => 2 * Math.exp(-x / 50) + 0.1) },
      { name: 'test', points: sine(10, (x) => 1 + Math.sin(x)) },
    ],
  }));
  assert.equal(img.width, 900);
  assert.equal(img.height, 500);
  // corners are background
  assert.deepEqual([...img.data.subarray(0, 4)], [255, 255, 255, 255]);
  const ink = nonBackground(img);
  assert.ok(ink > 3000, `chart has ink (${ink} px)`);
  assert.ok(ink < 900 * 500 * 0.5, 'chart is not mostly filled');
  assert.ok(countColor(img, PALETTE[0]!) > 200, 'first series colour appears');
  assert.ok(countColor(img, PALETTE[1]!) > 100, 'second series colour appears');
});

test('line chart: requested size, custom colour, text rendered in title band', () => {
  const img = decode(renderLineChart({
    width: 640, height: 360, title: 'A readable title',
    series: [{ name: 'x', color: '#00aa00', points: [[0, 0], [1, 1], [2, 4]] }],
  }));
  assert.equal(img.width, 640);
  assert.equal(img.height, 360);
  assert.ok(countColor(img, '#00aa00') > 100);
  // dark text pixels in the title band (top 40 px)
  let dark = 0;
  for (let y = 0; y < 40; y++) for (let x = 0; x < 640; x++) {
    const i = (y * 640 + x) * 4;
    if (img.data[i]! < 100 && img.data[i + 1]! < 100 && img.data[i + 2]! < 100) dark++;
  }
  assert.ok(dark > 100, `title text is rendered (${dark} dark px)`);
});

test('line chart: edge cases render without throwing', () => {
  const cases = [
    { series: [] },
    { series: [{ name: 'empty', points: [] }] },
    { series: [{ name: 'one', points: [[3, 0.5]] as [number, number][] }] },
    { series: [{ name: 'nan', points: [[0, NaN], [1, 1], [NaN, 2], [2, Infinity], [3, 2]] as [number, number][] }] },
    { series: [{ name: 'const', points: sine(20, () => 7) }] },
    { series: [{ name: 'zeros', points: sine(20, () => 0) }] },
    { logY: true, series: [{ name: 'log', points: [[0, 0], [1, -1], [2, 0.01], [3, 100]] as [number, number][] }] },
    { logY: true, series: [{ name: 'log-const', points: sine(5, () => 3) }] },
    { logY: true, series: [{ name: 'log-none', points: [[0, 0]] as [number, number][] }] },
    { yRange: [0, 1] as [number, number], series: [{ name: 'clipped', points: sine(20, (x) => x - 5) }] },
    { xIntegerTicks: true, series: [{ name: 'epochs', points: [[1, 0.9]] as [number, number][] }] },
    { series: [{ name: 'huge', points: [[0, 1e12], [1, 3e12]] as [number, number][] }] },
    { series: [{ name: 'tiny', points: [[0, 1e-7], [1, 3e-7]] as [number, number][] }] },
  ];
  for (const c of cases) {
    const img = decode(renderLineChart({ width: 400, height: 300, ...c }));
    assert.equal(img.width, 400);
    assert.equal(img.height, 300);
    assert.ok(nonBackground(img) > 500, 'axes and labels are drawn');
  }
  // NaN points are skipped but the others are still drawn
  const nan = decode(renderLineChart({ series: [{ name: 'n', color: '#ff00ff', points: [[0, NaN], [1, 1], [2, 3], [3, NaN], [4, 2]] }] }));
  assert.ok(countColor(nan, '#ff00ff') > 100);
});

test('line chart: log scale changes the rendering', () => {
  const series = [{ name: 's', points: sine(50, (x) => 10 ** (-x / 10)) }];
  const a = renderLineChart({ series });
  const b = renderLineChart({ series, logY: true });
  assert.notDeepEqual(a, b);
});

test('line chart: a log2 x axis spaces powers of two evenly', () => {
  // Markers at x = 2, 16 and 128: on a base-2 log axis, 16 (2^4) lies halfway between 2 (2^1) and 128 (2^7).
  const red = '#ff0000';
  const series = [2, 16, 128].map((x) => ({ name: '', points: [[x, 5]] as Array<[number, number]>, color: red, markers: true }));
  const centres = (png: Buffer): number[] => {
    const img = decode(png);
    const [r, g, b] = hex(red);
    const columns: number[] = [];
    for (let x = 0; x < img.width; x++) {
      for (let y = 0; y < img.height; y++) {
        const i = 4 * (y * img.width + x);
        if (Math.abs(img.data[i]! - r) < 40 && Math.abs(img.data[i + 1]! - g) < 40 && Math.abs(img.data[i + 2]! - b) < 40) {
          columns.push(x);
          break;
        }
      }
    }
    const groups: number[][] = [];
    for (const x of columns) {
      const last = groups[groups.length - 1];
      if (last && x - last[last.length - 1]! <= 1) last.push(x);
      else groups.push([x]);
    }
    return groups.map((g) => (g[0]! + g[g.length - 1]!) / 2);
  };
  const log2 = centres(renderLineChart({ series, log2X: true, xRange: [1, 256], legend: false }));
  assert.equal(log2.length, 3, `three markers: ${log2}`);
  assert.ok(Math.abs(log2[1]! - (log2[0]! + log2[2]!) / 2) <= 2, `16 halfway between 2 and 128: ${log2}`);
  const linear = centres(renderLineChart({ series, xRange: [-20, 256], legend: false }));
  assert.equal(linear.length, 3, `three markers: ${linear}`);
  assert.ok(linear[1]! - linear[0]! < (linear[2]! - linear[0]!) / 5, `on a linear axis 16 is near 2: ${linear}`);
});

test('bar chart: size, bar colour area grows with value', () => {
  const spec = {
    width: 700, height: 400, title: 'Accuracy per run', yLabel: 'accuracy',
    bars: [
      { label: 'small', value: 1 },
      { label: 'big', value: 4, color: '#ff0000' },
    ],
  };
  const img = decode(renderBarChart(spec));
  assert.equal(img.width, 700);
  assert.equal(img.height, 400);
  const blue = countColor(img, PALETTE[0]!, 4);
  const red = countColor(img, '#ff0000', 4);
  assert.ok(blue > 500 && red > 500, `bars drawn (${blue}, ${red})`);
  const ratio = red / blue;
  assert.ok(ratio > 3.5 && ratio < 4.5, `bar areas are proportional to values (ratio ${ratio})`);
});

test('bar chart: long labels are rotated or wrapped and stay inside the image', () => {
  const bars = Array.from({ length: 12 }, (_, i) => ({
    label: `lr=0.0${i + 1},batch=${32 * (i + 1)},workers=${i % 4 + 1},optimizer=sgd-momentum`, value: 0.95 + i * 0.003,
  }));
  const img = decode(renderBarChart({ bars, yRange: [0.9, 1], title: 'sweep' }));
  assert.equal(img.width, 900);
  assert.equal(img.height, 500);
  // label ink below the plot area, but bars still have a reasonable height
  assert.ok(countColor(img, PALETTE[0]!, 4) > 5000);
  assert.ok(nonBackground(img) > 5000);
});

test('bar chart: empty, NaN and negative values', () => {
  for (const bars of [[], [{ label: 'nan', value: NaN }], [{ label: 'neg', value: -2 }, { label: 'pos', value: 3 }]]) {
    const img = decode(renderBarChart({ width: 300, height: 200, bars }));
    assert.equal(img.width, 300);
    assert.equal(img.height, 200);
  }
});

test('niceTicks / logTicks / formatter', () => {
  assert.deepEqual(niceTicks(0, 1, 7).values, [0, 0.2, 0.4, 0.6, 0.8, 1]);
  assert.deepEqual(niceTicks(0.95, 1, 7, false).values, [0.95, 0.96, 0.97, 0.98, 0.99, 1]);
  const t = niceTicks(3, 3);
  assert.ok(t.min < 3 && t.max > 3);
  assert.deepEqual(niceTicks(1, 10, 9, true, true).values.every(Number.isInteger), true);
  const l = logTicks(0.02, 2.3);
  assert.ok(l.major.includes(0.1) && l.major.includes(1));
  const f = tickFormatter([0, 100000, 200000], 100000);
  assert.equal(f(200000), '200k');
  assert.equal(tickFormatter([0, 0.5, 1], 0.5)(0.5), '0.5');
});
