/**
 * Line and bar charts rendered to PNG with @napi-rs/canvas (pure functions:
 * spec in, PNG bytes out).
 */
import type { SKRSContext2D } from '@napi-rs/canvas';
import {
  AXIS_COLOR, GRID_COLOR, MUTED_COLOR, PALETTE, TEXT_COLOR,
  drawText, ellipsize, font, formatLogTick, formatValue, logTicks, newSurface, niceTicks,
  textWidth, tickFormatter, toPng, wrapText,
} from './draw.js';
import type { BarChartSpec, LineChartSpec, Point } from './types.js';

export type { BarChartSpec, LineChartSpec, LineSeries, Bar, Point } from './types.js';
export { PALETTE } from './draw.js';

const PAD = 14;
const TITLE_FONT = font(18, 'bold');
const LABEL_FONT = font(14);
const TICK_FONT = font(12);
const LEGEND_FONT = font(13);
const NOTE_FONT = font(14);

interface Axis {
  min: number;
  max: number;
  /** Tick positions (data units) with labels. */
  ticks: { v: number; label: string }[];
  /** Extra light grid lines (log minor ticks). */
  minor: number[];
  log: boolean;
}

function linearAxis(
  dataMin: number, dataMax: number, fixed: readonly [number, number] | undefined, integer = false, maxTicks = 7,
): Axis {
  let t;
  if (fixed && Number.isFinite(fixed[0]) && Number.isFinite(fixed[1]) && fixed[0] !== fixed[1]) {
    const lo = Math.min(fixed[0], fixed[1]);
    const hi = Math.max(fixed[0], fixed[1]);
    t = niceTicks(lo, hi, maxTicks, false, integer);
    t = { ...t, min: lo, max: hi };
  } else {
    t = niceTicks(dataMin, dataMax, maxTicks, true, integer);
  }
  const fmt = tickFormatter(t.values, t.step);
  return { min: t.min, max: t.max, ticks: t.values.map((v) => ({ v, label: fmt(v) })), minor: [], log: false };
}

/**
 * Linear axis over the data range: widened to the nice tick bounds only when
 * that adds little (< 4 % per side), and snapped to 0 when the data start
 * close to 0; otherwise the exact data range with the ticks inside.
 */
function dataAxis(lo: number, hi: number, integer: boolean, maxTicks: number): Axis {
  const span = hi - lo;
  if (lo > 0 && lo <= span * 0.05) lo = 0;
  const ext = niceTicks(lo, hi, maxTicks, true, integer);
  const slack = span * 0.04;
  const min = lo - ext.min <= slack ? ext.min : lo;
  const max = ext.max - hi <= slack ? ext.max : hi;
  return linearAxis(min, max, [min, max], integer, maxTicks);
}

/** Auto y axis: the data range plus a 3 % margin (not below 0 for non-negative data). */
function paddedAxis(lo: number, hi: number): Axis {
  if (lo === hi) {
    const t = niceTicks(lo, hi, 7, true);
    return linearAxis(t.min, t.max, undefined);
  }
  const m = (hi - lo) * 0.03;
  return dataAxis(lo >= 0 ? Math.max(0, lo - m) : lo - m, hi + m, false, 7);
}

function logAxis(dataMin: number, dataMax: number, fixed: readonly [number, number] | undefined): Axis {
  let lo = dataMin;
  let hi = dataMax;
  if (fixed && fixed[0] > 0 && fixed[1] > 0 && fixed[0] !== fixed[1]) {
    lo = Math.min(fixed[0], fixed[1]);
    hi = Math.max(fixed[0], fixed[1]);
  }
  const t = logTicks(lo, hi);
  const min = fixed && fixed[0] > 0 && fixed[1] > 0 && fixed[0] !== fixed[1] ? lo : t.min;
  const max = fixed && fixed[0] > 0 && fixed[1] > 0 && fixed[0] !== fixed[1] ? hi : t.max;
  const inside = (v: number): boolean => v >= min * (1 - 1e-9) && v <= max * (1 + 1e-9);
  return {
    min, max, log: true,
    ticks: t.major.filter(inside).map((v) => ({ v, label: formatLogTick(v) })),
    minor: t.minor.filter(inside),
  };
}

/** A base-2 log axis over [lo, hi] (or the fixed range), ticked at the powers of two (every other one past 12). */
function log2Axis(lo: number, hi: number, fixed: readonly [number, number] | undefined): Axis {
  if (fixed && fixed[0] > 0 && fixed[1] > 0 && fixed[0] !== fixed[1]) [lo, hi] = [Math.min(...fixed), Math.max(...fixed)];
  if (!(lo > 0)) lo = 1;
  if (!(hi > lo)) hi = lo * 2;
  const first = Math.ceil(Math.log2(lo) - 1e-9);
  const last = Math.floor(Math.log2(hi) + 1e-9);
  const every = last - first > 12 ? 2 : 1;
  const ticks: { v: number; label: string }[] = [];
  for (let e = first; e <= last; e += every) ticks.push({ v: 2 ** e, label: formatValue(2 ** e) });
  // The scaler takes log10 of both ends; the ratio of positions is the same in any base.
  return { min: lo, max: hi, ticks, minor: [], log: true };
}

function scaler(axis: Axis, p0: number, p1: number): (v: number) => number {
  if (axis.log) {
    const a = Math.log10(axis.min);
    const b = Math.log10(axis.max);
    return (v) => p0 + ((Math.log10(v) - a) / (b - a)) * (p1 - p0);
  }
  return (v) => p0 + ((v - axis.min) / (axis.max - axis.min)) * (p1 - p0);
}

function drawRotatedText(ctx: SKRSContext2D, text: string, x: number, y: number, f: string, color: string): void {
  ctx.save();
  ctx.translate(x, y);
  ctx.rotate(-Math.PI / 2);
  drawText(ctx, text, 0, 0, f, color, 'center', 'top');
  ctx.restore();
}

interface LegendItem { name: string; color: string; dash?: number[]; markers: boolean; lineWidth: number; alpha: number }

/** Lays out legend items in centered rows; returns total height and a draw function. */
function layoutLegend(
  ctx: SKRSContext2D, items: LegendItem[], maxWidth: number,
): { height: number; draw: (top: number, centerX: number) => void } {
  if (items.length === 0) return { height: 0, draw: () => {} };
  const swatch = 26;
  const rowH = 20;
  const gapItems = 20;
  const widths = items.map((it) => swatch + 6 + textWidth(ctx, ellipsize(ctx, it.name, maxWidth - swatch - 6, LEGEND_FONT), LEGEND_FONT));
  const rows: number[][] = [];
  let cur: number[] = [];
  let curW = 0;
  items.forEach((_, i) => {
    const w = widths[i]!;
    if (cur.length > 0 && curW + gapItems + w > maxWidth) { rows.push(cur); cur = []; curW = 0; }
    curW += (cur.length > 0 ? gapItems : 0) + w;
    cur.push(i);
  });
  if (cur.length) rows.push(cur);
  return {
    height: rows.length * rowH,
    draw: (top, centerX) => {
      rows.forEach((row, r) => {
        const total = row.reduce((s, i, k) => s + widths[i]! + (k > 0 ? gapItems : 0), 0);
        let x = centerX - total / 2;
        const y = top + r * rowH + rowH / 2;
        for (const i of row) {
          const it = items[i]!;
          ctx.save();
          ctx.globalAlpha = Math.max(it.alpha, 0.6);
          ctx.strokeStyle = it.color;
          ctx.lineWidth = Math.max(2, Math.min(it.lineWidth, 4));
          ctx.setLineDash(it.dash ?? []);
          ctx.beginPath();
          ctx.moveTo(x, y);
          ctx.lineTo(x + swatch, y);
          ctx.stroke();
          ctx.setLineDash([]);
          if (it.markers) drawMarker(ctx, x + swatch / 2, y, it.color);
          ctx.restore();
          drawText(ctx, ellipsize(ctx, it.name, maxWidth - swatch - 6, LEGEND_FONT), x + swatch + 6, y, LEGEND_FONT, TEXT_COLOR, 'left', 'middle');
          x += widths[i]! + gapItems;
        }
      });
    },
  };
}

/** Y-axis title, rotated, centred on the plot area [y0, y1]. */
function drawYLabel(ctx: SKRSContext2D, yLabel: string | undefined, y0: number, y1: number): void {
  if (!yLabel) return;
  drawRotatedText(ctx, ellipsize(ctx, yLabel, Math.max(40, y1 - y0 + 40), LABEL_FONT), PAD, (y0 + y1) / 2, LABEL_FONT, TEXT_COLOR);
}

function drawMarker(ctx: SKRSContext2D, x: number, y: number, color: string, r = 3.6): void {
  ctx.beginPath();
  ctx.arc(x, y, r, 0, Math.PI * 2);
  ctx.fillStyle = color;
  ctx.fill();
  ctx.lineWidth = 1;
  ctx.strokeStyle = '#ffffff';
  ctx.stroke();
}

function finiteMinMax(vals: Iterable<number>): [number, number] | null {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of vals) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return lo <= hi ? [lo, hi] : null;
}

/** Draws the chart title and x-axis title; returns the top of the free area. */
function drawTitles(ctx: SKRSContext2D, W: number, H: number, title?: string, xLabel?: string): number {
  let top = PAD;
  if (title) {
    drawText(ctx, ellipsize(ctx, title, W - 2 * PAD, TITLE_FONT), W / 2, top, TITLE_FONT, TEXT_COLOR, 'center', 'top');
    top += 30;
  }
  if (xLabel) drawText(ctx, ellipsize(ctx, xLabel, W - 2 * PAD, LABEL_FONT), W / 2, H - PAD, LABEL_FONT, TEXT_COLOR, 'center', 'bottom');
  return top;
}

/**
 * Renders a line chart (several series, legend, nice ticks, optional log y)
 * and returns PNG bytes. Non-finite points (and y <= 0 on a log axis) are
 * skipped; an empty chart shows "No data".
 */
export function renderLineChart(spec: LineChartSpec): Buffer {
  const W = Math.max(200, Math.round(spec.width ?? 900));
  const H = Math.max(150, Math.round(spec.height ?? 500));
  const surface = newSurface(W, H);
  const { ctx } = surface;
  const logY = spec.logY === true;

  const series = spec.series.map((s, i) => {
    const pts: Point[] = s.points.filter(
      ([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!logY || y > 0) && (!spec.log2X || x > 0),
    );
    return {
      name: s.name,
      color: s.color ?? PALETTE[i % PALETTE.length]!,
      lineWidth: s.lineWidth ?? 2,
      dash: s.dash,
      alpha: s.alpha ?? 1,
      markers: s.markers ?? pts.length <= 40,
      pts,
    };
  });

  let top = drawTitles(ctx, W, H, spec.title, spec.xLabel);

  const showLegend = spec.legend ?? series.some((s) => s.name !== '');
  const legend = showLegend
    ? layoutLegend(ctx, series.filter((s) => s.name !== '').map((s) => ({
      name: s.name, color: s.color, dash: s.dash, markers: s.markers, lineWidth: s.lineWidth, alpha: s.alpha,
    })), W - 2 * PAD - 40)
    : { height: 0, draw: () => {} };
  if (legend.height > 0) {
    legend.draw(top, W / 2);
    top += legend.height + 8;
  }
  top += 6;

  const allPts = series.flatMap((s) => s.pts);
  const xs = finiteMinMax(allPts.map((p) => p[0]));
  const ys = finiteMinMax(allPts.map((p) => p[1]));

  let xMin = xs ? xs[0] : 0;
  let xMax = xs ? xs[1] : 1;
  if (xMin === xMax) {
    const pad = xMin === 0 ? 1 : Math.abs(xMin) * 0.5;
    if (spec.xIntegerTicks) { xMin -= Math.max(1, Math.round(pad)); xMax += Math.max(1, Math.round(pad)); }
    else { xMin -= pad; xMax += pad; }
  }
  const xAxis = spec.log2X
    ? log2Axis(xs ? xs[0] : 1, xs ? xs[1] : 2, spec.xRange)
    : spec.xRange
    ? linearAxis(xMin, xMax, spec.xRange, spec.xIntegerTicks === true, 9)
    : dataAxis(xMin, xMax, spec.xIntegerTicks === true, 9);
  const yAxis = logY
    ? logAxis(ys ? ys[0] : 0.1, ys ? ys[1] : 10, spec.yRange)
    : spec.yRange
      ? linearAxis(ys ? ys[0] : 0, ys ? ys[1] : 1, spec.yRange)
      : paddedAxis(ys ? ys[0] : 0, ys ? ys[1] : 1);

  // margins
  const yTickW = Math.max(0, ...yAxis.ticks.map((t) => textWidth(ctx, t.label, TICK_FONT)));
  const left = PAD + (spec.yLabel ? 24 : 0) + yTickW + 10;
  const lastX = xAxis.ticks[xAxis.ticks.length - 1];
  const right = PAD + Math.max(6, lastX ? textWidth(ctx, lastX.label, TICK_FONT) / 2 : 0);
  const bottom = PAD + (spec.xLabel ? 24 : 0) + 22;
  const x0 = left;
  const x1 = W - right;
  const y0 = top;
  const y1 = H - bottom;
  if (x1 - x0 < 20 || y1 - y0 < 20) return toPng(surface); // too small to draw a plot area
  const sx = scaler(xAxis, x0, x1);
  const sy = scaler(yAxis, y1, y0);
  drawYLabel(ctx, spec.yLabel, y0, y1);

  // grid
  ctx.lineWidth = 1;
  ctx.strokeStyle = '#f0f0f0';
  for (const v of yAxis.minor) {
    const y = Math.round(sy(v)) + 0.5;
    ctx.beginPath(); ctx.moveTo(x0, y); ctx.lineTo(x1, y); ctx.stroke();
  }
  ctx.strokeStyle = GRID_COLOR;
  for (const t of yAxis.ticks) {
    const y = Math.round(sy(t.v)) + 0.5;
    ctx.beginPath(); ctx.moveTo(x0, y); ctx.lineTo(x1, y); ctx.stroke();
    drawText(ctx, t.label, x0 - 8, y, TICK_FONT, MUTED_COLOR, 'right', 'middle');
  }
  for (const t of xAxis.ticks) {
    const x = Math.round(sx(t.v)) + 0.5;
    ctx.strokeStyle = GRID_COLOR;
    ctx.beginPath(); ctx.moveTo(x, y0); ctx.lineTo(x, y1); ctx.stroke();
    ctx.strokeStyle = AXIS_COLOR;
    ctx.beginPath(); ctx.moveTo(x, y1); ctx.lineTo(x, y1 + 5); ctx.stroke();
    drawText(ctx, t.label, x, y1 + 8, TICK_FONT, MUTED_COLOR, 'center', 'top');
  }

  // series (clipped to the plot area)
  ctx.save();
  ctx.beginPath();
  ctx.rect(x0, y0, x1 - x0, y1 - y0);
  ctx.clip();
  for (const s of series) {
    if (s.pts.length === 0) continue;
    ctx.globalAlpha = s.alpha;
    ctx.strokeStyle = s.color;
    ctx.lineWidth = s.lineWidth;
    ctx.lineJoin = 'round';
    ctx.lineCap = 'round';
    ctx.setLineDash(s.dash ?? []);
    ctx.beginPath();
    s.pts.forEach(([x, y], i) => {
      if (i === 0) ctx.moveTo(sx(x), sy(y));
      else ctx.lineTo(sx(x), sy(y));
    });
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.globalAlpha = 1;
  }
  ctx.restore();
  for (const s of series) {
    if (!s.markers) continue;
    const r = s.pts.length === 1 ? 5.5 : 3.6;
    for (const [x, y] of s.pts) {
      const px = sx(x);
      const py = sy(y);
      if (px >= x0 - 0.5 && px <= x1 + 0.5 && py >= y0 - 0.5 && py <= y1 + 0.5) drawMarker(ctx, px, py, s.color, r);
    }
  }

  // frame
  ctx.strokeStyle = AXIS_COLOR;
  ctx.lineWidth = 1;
  ctx.strokeRect(Math.round(x0) + 0.5, Math.round(y0) + 0.5, Math.round(x1 - x0), Math.round(y1 - y0));

  if (allPts.length === 0) {
    drawText(ctx, 'No data', (x0 + x1) / 2, (y0 + y1) / 2, NOTE_FONT, '#999999', 'center', 'middle');
  }
  return toPng(surface);
}

/**
 * Renders a vertical bar chart and returns PNG bytes. Long labels are
 * wrapped (up to 3 lines) or, if that does not fit, rotated by 40°.
 * Non-finite values get no bar and a "n/a" mark.
 */
export function renderBarChart(spec: BarChartSpec): Buffer {
  const W = Math.max(200, Math.round(spec.width ?? 900));
  const H = Math.max(150, Math.round(spec.height ?? 500));
  const surface = newSurface(W, H);
  const { ctx } = surface;
  const bars = spec.bars;
  const n = bars.length;
  const top = drawTitles(ctx, W, H, spec.title, spec.xLabel) + 14;

  const vals = bars.map((b) => b.value).filter((v) => Number.isFinite(v));
  const mm = finiteMinMax(vals);
  let lo = Math.min(0, mm ? mm[0] : 0);
  let hi = Math.max(0, mm ? mm[1] : 1);
  if (lo === hi) hi = lo + 1;
  if (spec.showValues !== false) {
    // head room for the value labels
    if (hi > 0) hi += (hi - lo) * 0.06;
    if (lo < 0) lo -= (hi - lo) * 0.06;
  }
  const yAxis = linearAxis(lo, hi, spec.yRange);
  const yTickW = Math.max(0, ...yAxis.ticks.map((t) => textWidth(ctx, t.label, TICK_FONT)));
  const left0 = PAD + (spec.yLabel ? 24 : 0) + yTickW + 10;
  const right = PAD + 6;
  const plotW0 = W - left0 - right;
  const slot0 = n > 0 ? plotW0 / n : plotW0;

  // label layout: horizontal (possibly wrapped) or rotated
  const lineH = 15;
  const maxLabelBand = Math.max(40, Math.round(H * 0.35));
  let mode: 'wrap' | 'rotate' = 'wrap';
  let wrapped: string[][] = [];
  for (const b of bars) {
    const lines = wrapText(ctx, b.label, slot0 - 6, TICK_FONT, 3);
    if (!lines) { mode = 'rotate'; break; }
    wrapped.push(lines);
  }
  const angle = (40 * Math.PI) / 180;
  let rotated: string[] = [];
  let labelBand: number;
  let left = left0;
  if (mode === 'wrap') {
    labelBand = 8 + Math.max(1, ...wrapped.map((l) => l.length)) * lineH;
  } else {
    wrapped = [];
    const maxLen = (maxLabelBand - 12) / Math.sin(angle);
    rotated = bars.map((b) => ellipsize(ctx, b.label, maxLen, TICK_FONT));
    const longest = Math.max(0, ...rotated.map((t) => textWidth(ctx, t, TICK_FONT)));
    labelBand = 12 + longest * Math.sin(angle) + 10;
    // the first label extends to the left of its bar
    const firstW = rotated.length ? textWidth(ctx, rotated[0]!, TICK_FONT) * Math.cos(angle) : 0;
    left = Math.max(left0, PAD + (spec.yLabel ? 24 : 0) + firstW - slot0 / 2 + 4);
  }
  const bottom = PAD + (spec.xLabel ? 24 : 0) + labelBand;
  const x0 = left;
  const x1 = W - right;
  const y0 = top;
  const y1 = H - bottom;
  if (x1 - x0 < 20 || y1 - y0 < 20) return toPng(surface);
  const sy = scaler(yAxis, y1, y0);
  drawYLabel(ctx, spec.yLabel, y0, y1);
  const slot = n > 0 ? (x1 - x0) / n : x1 - x0;

  // grid + y ticks
  ctx.lineWidth = 1;
  for (const t of yAxis.ticks) {
    const y = Math.round(sy(t.v)) + 0.5;
    ctx.strokeStyle = GRID_COLOR;
    ctx.beginPath(); ctx.moveTo(x0, y); ctx.lineTo(x1, y); ctx.stroke();
    drawText(ctx, t.label, x0 - 8, y, TICK_FONT, MUTED_COLOR, 'right', 'middle');
  }

  const base = Math.min(Math.max(0, yAxis.min), yAxis.max);
  const yBase = sy(base);
  const barW = Math.max(1, Math.min(slot * 0.7, 90));
  const fmt = spec.valueFormat ?? formatValue;
  const valueFont = font(11);
  ctx.save();
  ctx.beginPath();
  ctx.rect(x0, y0, x1 - x0, y1 - y0);
  ctx.clip();
  bars.forEach((b, i) => {
    const cx = x0 + slot * (i + 0.5);
    if (!Number.isFinite(b.value)) return;
    const yv = sy(Math.min(Math.max(b.value, yAxis.min), yAxis.max));
    ctx.fillStyle = b.color ?? spec.color ?? PALETTE[0]!;
    ctx.fillRect(cx - barW / 2, Math.min(yv, yBase), barW, Math.max(1, Math.abs(yBase - yv)));
  });
  ctx.restore();

  // values above (or below, for negatives) the bars
  bars.forEach((b, i) => {
    const cx = x0 + slot * (i + 0.5);
    if (!Number.isFinite(b.value)) {
      drawText(ctx, 'n/a', cx, yBase - 4, valueFont, '#999999', 'center', 'bottom');
      return;
    }
    if (spec.showValues === false) return;
    const txt = fmt(b.value);
    if (textWidth(ctx, txt, valueFont) > slot - 2) return;
    const yv = sy(Math.min(Math.max(b.value, yAxis.min), yAxis.max));
    if (b.value >= base) {
      if (yv - 15 >= y0) drawText(ctx, txt, cx, yv - 3, valueFont, TEXT_COLOR, 'center', 'bottom');
      else if (yBase - yv > 18) drawText(ctx, txt, cx, yv + 4, valueFont, '#ffffff', 'center', 'top');
    } else {
      if (yv + 15 <= y1) drawText(ctx, txt, cx, yv + 3, valueFont, TEXT_COLOR, 'center', 'top');
      else if (yv - yBase > 18) drawText(ctx, txt, cx, yv - 4, valueFont, '#ffffff', 'center', 'bottom');
    }
  });

  // axes
  ctx.strokeStyle = AXIS_COLOR;
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(Math.round(x0) + 0.5, y0);
  ctx.lineTo(Math.round(x0) + 0.5, y1);
  ctx.stroke();
  ctx.strokeStyle = '#444444';
  ctx.beginPath();
  ctx.moveTo(x0, Math.round(yBase) + 0.5);
  ctx.lineTo(x1, Math.round(yBase) + 0.5);
  ctx.stroke();

  // category labels
  bars.forEach((_, i) => {
    const cx = x0 + slot * (i + 0.5);
    ctx.strokeStyle = AXIS_COLOR;
    ctx.beginPath(); ctx.moveTo(Math.round(cx) + 0.5, y1); ctx.lineTo(Math.round(cx) + 0.5, y1 + 4); ctx.stroke();
    if (mode === 'wrap') {
      wrapped[i]!.forEach((line, k) => {
        drawText(ctx, line, cx, y1 + 8 + k * lineH, TICK_FONT, TEXT_COLOR, 'center', 'top');
      });
    } else {
      ctx.save();
      ctx.translate(cx, y1 + 8);
      ctx.rotate(-angle);
      drawText(ctx, rotated[i]!, 0, 0, TICK_FONT, TEXT_COLOR, 'right', 'middle');
      ctx.restore();
    }
  });

  if (n === 0) drawText(ctx, 'No data', (x0 + x1) / 2, (y0 + y1) / 2, NOTE_FONT, '#999999', 'center', 'middle');
  return toPng(surface);
}
