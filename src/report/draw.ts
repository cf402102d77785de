/** Low-level drawing helpers shared by the chart renderers. */
import { createCanvas, type Canvas, type SKRSContext2D } from '@napi-rs/canvas';

/** Matplotlib's "tab10" palette: distinct, colour-blind friendlier colours. */
export const PALETTE: readonly string[] = [
  '#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd',
  '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf',
];

export const FONT_FAMILY = '"DejaVu Sans", "Helvetica Neue", Arial, sans-serif';
export const TEXT_COLOR = '#222222';
export const MUTED_COLOR = '#555555';
export const GRID_COLOR = '#e3e3e3';
export const AXIS_COLOR = '#888888';

export function font(sizePx: number, weight: 'normal' | 'bold' = 'normal'): string {
  return `${weight === 'bold' ? 'bold ' : ''}${sizePx}px ${FONT_FAMILY}`;
}

export interface Surface {
  canvas: Canvas;
  ctx: SKRSContext2D;
}

/** A canvas of the given size (rounded, at least 1×1) filled with `background`. */
export function newSurface(width: number, height: number, background = '#ffffff'): Surface {
  const w = Math.max(1, Math.round(width));
  const h = Math.max(1, Math.round(height));
  const canvas = createCanvas(w, h);
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = background;
  ctx.fillRect(0, 0, w, h);
  return { canvas, ctx };
}

export function toPng(s: Surface): Buffer {
  return s.canvas.toBuffer('image/png');
}

export function textWidth(ctx: SKRSContext2D, text: string, f: string): number {
  ctx.font = f;
  return ctx.measureText(text).width;
}

/** Shortens `text` with an ellipsis so that it fits `maxWidth` in font `f`. */
export function ellipsize(ctx: SKRSContext2D, text: string, maxWidth: number, f: string): string {
  ctx.font = f;
  if (ctx.measureText(text).width <= maxWidth) return text;
  const ell = '…';
  let lo = 0;
  let hi = text.length;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (ctx.measureText(text.slice(0, mid) + ell).width <= maxWidth) lo = mid;
    else hi = mid - 1;
  }
  return lo === 0 ? ell : text.slice(0, lo) + ell;
}

/**
 * Greedy word wrap. Breaks after whitespace and after , ; / | so that labels
 * like "lr=0.1,bs=64,workers=4" wrap nicely. Returns null if it needs more
 * than `maxLines` lines or a single token is wider than `maxWidth`.
 */
export function wrapText(
  ctx: SKRSContext2D, text: string, maxWidth: number, f: string, maxLines: number,
): string[] | null {
  ctx.font = f;
  const tokens = text.match(/[^\s,;/|]+[,;/|]*\s*|[,;/|]+\s*|\s+/g) ?? [text];
  const lines: string[] = [];
  let cur = '';
  for (const tok of tokens) {
    const cand = cur + tok;
    if (ctx.measureText(cand.trimEnd()).width <= maxWidth) {
      cur = cand;
      continue;
    }
    if (cur.trim() !== '') lines.push(cur.trimEnd());
    cur = tok.trimStart();
    if (ctx.measureText(cur.trimEnd()).width > maxWidth) return null;
  }
  if (cur.trim() !== '') lines.push(cur.trimEnd());
  if (lines.length === 0) lines.push('');
  return lines.length <= maxLines ? lines : null;
}

// ---------------------------------------------------------------- numbers

export interface Ticks {
  min: number;
  max: number;
  step: number;
  values: number[];
}

function niceNum(range: number, round: boolean): number {
  const exp = Math.floor(Math.log10(range) + 1e-12);
  const f = (range / 10 ** exp) * (1 - 1e-9);
  let nf: number;
  if (round) nf = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
  else nf = f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10;
  return nf * 10 ** exp;
}

function decimalsFor(step: number): number {
  if (!(step > 0) || !Number.isFinite(step)) return 0;
  return Math.max(0, Math.min(12, -Math.floor(Math.log10(step) + 1e-9)));
}

function roundTo(v: number, decimals: number): number {
  const r = Number(v.toFixed(decimals));
  return Object.is(r, -0) ? 0 : r;
}

/**
 * "Nice" linear ticks (1, 2, 5 × 10^k steps). If `extend`, the returned
 * min/max are widened to multiples of the step; otherwise they are kept and
 * only ticks inside [min, max] are returned.
 */
export function niceTicks(min: number, max: number, maxTicks = 6, extend = true, integer = false): Ticks {
  if (!Number.isFinite(min) || !Number.isFinite(max)) { min = 0; max = 1; }
  if (min > max) [min, max] = [max, min];
  if (min === max) {
    const pad = min === 0 ? 1 : Math.abs(min) * 0.1;
    min -= pad;
    max += pad;
  }
  // smallest 1-2-5 step giving at most maxTicks ticks
  const span = max - min;
  let step = niceNum(span, false);
  const count = (st: number): number => (extend
    ? Math.ceil(max / st - 1e-9) - Math.floor(min / st + 1e-9) + 1
    : Math.floor(max / st + 1e-9) - Math.ceil(min / st - 1e-9) + 1);
  for (let guard = 0; guard < 60; guard++) {
    const exp = Math.floor(Math.log10(step) + 1e-12);
    const f = Math.round(step / 10 ** exp);
    const smaller = f === 1 ? 0.5 * 10 ** exp : f === 2 ? 1 * 10 ** exp : 2 * 10 ** exp;
    if (count(smaller) > Math.max(2, maxTicks) || (integer && smaller < 1)) break;
    step = smaller;
  }
  if (integer) step = Math.max(1, Math.round(step));
  const dec = integer ? 0 : decimalsFor(step);
  let lo = Math.floor(min / step + 1e-9) * step;
  let hi = Math.ceil(max / step - 1e-9) * step;
  if (extend) { min = roundTo(lo, dec); max = roundTo(hi, dec); }
  else { lo = Math.ceil(min / step - 1e-9) * step; hi = Math.floor(max / step + 1e-9) * step; }
  const values: number[] = [];
  const n = Math.round((hi - lo) / step);
  for (let i = 0; i <= n && i <= 1000; i++) values.push(roundTo(lo + i * step, dec));
  return { min, max, step, values };
}

/** Ticks for a log10 axis: 1-2-5 per decade when the span is short, else powers of 10. */
export function logTicks(min: number, max: number): { min: number; max: number; major: number[]; minor: number[] } {
  if (!(min > 0) || !Number.isFinite(min)) min = 1;
  if (!(max > 0) || !Number.isFinite(max)) max = min * 10;
  if (min > max) [min, max] = [max, min];
  let lo = Math.log10(min);
  let hi = Math.log10(max);
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const pad = (hi - lo) * 0.04;
  lo -= pad;
  hi += pad;
  const span = hi - lo;
  const mults = span <= 1.2 ? [1, 2, 3, 5] : span <= 3.5 ? [1, 2, 5] : [1];
  const decadeStep = span > 10 ? Math.ceil(span / 8) : 1;
  const major: number[] = [];
  const minor: number[] = [];
  for (let k = Math.floor(lo) - 1; k <= Math.ceil(hi); k++) {
    for (let m = 1; m <= 9; m++) {
      const v = m * 10 ** k;
      const lv = Math.log10(v);
      if (lv < lo - 1e-12 || lv > hi + 1e-12) continue;
      const isMajor = mults.includes(m) && (m !== 1 || k % decadeStep === 0);
      if (isMajor) major.push(Number(v.toPrecision(6)));
      else if (span <= 6) minor.push(Number(v.toPrecision(6)));
    }
  }
  if (major.length < 2) {
    // very short span: fall back to linear nice ticks inside the range
    const t = niceTicks(10 ** lo, 10 ** hi, 5, false);
    return { min: 10 ** lo, max: 10 ** hi, major: t.values.filter((v) => v > 0), minor: [] };
  }
  return { min: 10 ** lo, max: 10 ** hi, major, minor };
}

/** Tick label formatter for a linear axis whose ticks are `values` spaced by `step`. */
export function tickFormatter(values: readonly number[], step: number): (v: number) => string {
  const maxAbs = values.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const stepA = Math.abs(step);
  const units: [number, string][] = [[1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
  if (maxAbs >= 1e4) {
    const [u, suffix] = units.find(([u]) => maxAbs >= u)!;
    const dec = decimalsFor(stepA / u);
    return (v) => (v === 0 ? '0' : `${roundTo(v / u, dec).toFixed(dec)}${suffix}`);
  }
  if (maxAbs > 0 && maxAbs < 1e-3) {
    return (v) => (v === 0 ? '0' : Number(v.toPrecision(3)).toExponential());
  }
  const dec = decimalsFor(stepA);
  return (v) => roundTo(v, dec).toFixed(dec);
}

/** Tick label for a log axis. */
export function formatLogTick(v: number): string {
  if (v >= 1e5 || v < 1e-3) {
    const e = Math.floor(Math.log10(v) + 1e-9);
    const m = v / 10 ** e;
    const ms = Math.abs(m - 1) < 1e-6 ? '' : `${Number(m.toPrecision(3))}×`;
    return `${ms}1e${e}`;
  }
  return String(Number(v.toPrecision(6)));
}

/** Compact general-purpose number formatting (4 significant digits). */
export function formatValue(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e9) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e9)) return v.toExponential(3);
  return String(Number(v.toPrecision(4)));
}

/** Draws text with explicit alignment. */
export function drawText(
  ctx: SKRSContext2D, text: string, x: number, y: number, f: string, color: string,
  align: 'left' | 'center' | 'right' = 'left', baseline: 'top' | 'middle' | 'alphabetic' | 'bottom' = 'alphabetic',
): void {
  ctx.font = f;
  ctx.fillStyle = color;
  ctx.textAlign = align;
  ctx.textBaseline = baseline;
  ctx.fillText(text, x, y);
}

/** Parses '#rgb' / '#rrggbb' into [r, g, b]; null for anything else. */
export function parseHexColor(c: string): [number, number, number] | null {
  const m = /^#([0-9a-f]{3}|[0-9a-f]{6})$/i.exec(c.trim());
  if (!m) return null;
  let h = m[1]!;
  if (h.length === 3) h = h.split('').map((ch) => ch + ch).join('');
  return [parseInt(h.slice(0, 2), 16), parseInt(h.slice(2, 4), 16), parseInt(h.slice(4, 6), 16)];
}
