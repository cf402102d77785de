/** Confusion matrix: counting, heat-map PNG and HTML table. */
import { MUTED_COLOR, TEXT_COLOR, drawText, ellipsize, font, newSurface, textWidth, toPng } from './draw.js';
import { escapeHtml } from './escape.js';

/**
 * Counts `matrix[true][pred]`. Throws if the lengths differ or a label is not
 * an integer in [0, classes).
 */
export function confusionMatrix(pred: ArrayLike<number>, truth: ArrayLike<number>, classes = 10): number[][] {
  if (pred.length !== truth.length) {
    throw new RangeError(`pred has ${pred.length} entries but truth has ${truth.length}`);
  }
  if (!Number.isInteger(classes) || classes < 1) throw new RangeError(`invalid class count ${classes}`);
  const m = Array.from({ length: classes }, () => new Array<number>(classes).fill(0));
  for (let i = 0; i < pred.length; i++) {
    const p = pred[i]!;
    const t = truth[i]!;
    if (!Number.isInteger(p) || p < 0 || p >= classes) throw new RangeError(`pred[${i}] = ${p} is not a class in [0, ${classes})`);
    if (!Number.isInteger(t) || t < 0 || t >= classes) throw new RangeError(`truth[${i}] = ${t} is not a class in [0, ${classes})`);
    m[t]![p]! += 1;
  }
  return m;
}

export interface ConfusionStats {
  total: number;
  correct: number;
  /** correct / total (NaN when total is 0). */
  accuracy: number;
  rowTotals: number[];
  colTotals: number[];
  /** Per true class: diagonal / row total (NaN for empty rows). */
  recall: number[];
  /** Per predicted class: diagonal / column total (NaN for empty columns). */
  precision: number[];
}

export function confusionStats(matrix: readonly (readonly number[])[]): ConfusionStats {
  const n = matrix.length;
  const rowTotals = matrix.map((r) => r.reduce((a, b) => a + b, 0));
  const colTotals = Array.from({ length: n }, (_, j) => matrix.reduce((a, r) => a + (r[j] ?? 0), 0));
  const diag = matrix.map((r, i) => r[i] ?? 0);
  const total = rowTotals.reduce((a, b) => a + b, 0);
  const correct = diag.reduce((a, b) => a + b, 0);
  return {
    total, correct, accuracy: total > 0 ? correct / total : NaN, rowTotals, colTotals,
    recall: diag.map((d, i) => (rowTotals[i]! > 0 ? d / rowTotals[i]! : NaN)),
    precision: diag.map((d, j) => (colTotals[j]! > 0 ? d / colTotals[j]! : NaN)),
  };
}

function lerp(a: number, b: number, t: number): number {
  return Math.round(a + (b - a) * t);
}

function ramp(stops: readonly [number, number, number][], t: number): [number, number, number] {
  t = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0));
  const x = t * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const a = stops[i]!;
  const b = stops[i + 1]!;
  return [lerp(a[0], b[0], f), lerp(a[1], b[1], f), lerp(a[2], b[2], f)];
}

const BLUES: [number, number, number][] = [[247, 251, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]];
const REDS: [number, number, number][] = [[255, 245, 240], [252, 187, 161], [251, 106, 74], [203, 24, 29], [103, 0, 13]];

/**
 * Cell colour: diagonal cells in blue by the row's recall, off-diagonal cells
 * in red by their share of the row relative to the largest off-diagonal share
 * (so that the typical errors stand out even at 99 % accuracy). Zero: white.
 */
export function confusionCellColor(matrix: readonly (readonly number[])[], i: number, j: number): { bg: string; fg: string } {
  const v = matrix[i]?.[j] ?? 0;
  if (v <= 0) return { bg: '#ffffff', fg: '#b0b0b0' };
  const rowT = matrix[i]!.reduce((a, b) => a + b, 0);
  let rgb: [number, number, number];
  if (i === j) {
    rgb = ramp(BLUES, 0.15 + 0.85 * (v / rowT));
  } else {
    let maxOff = 0;
    matrix.forEach((r, a) => {
      const t = r.reduce((x, y) => x + y, 0);
      r.forEach((c, b) => { if (a !== b && t > 0) maxOff = Math.max(maxOff, c / t); });
    });
    rgb = ramp(REDS, 0.1 + 0.8 * (v / rowT / maxOff));
  }
  const lum = (0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]) / 255;
  const hex = `#${rgb.map((c) => c.toString(16).padStart(2, '0')).join('')}`;
  return { bg: hex, fg: lum < 0.55 ? '#ffffff' : '#1a1a1a' };
}

function pct(x: number, digits = 1): string {
  return Number.isFinite(x) ? `${(x * 100).toFixed(digits)}%` : '–';
}

export interface ConfusionRenderOptions {
  title?: string;
  classNames?: readonly string[];
  /** Cell size in px (default: fits about 560 px for the matrix, 28..64). */
  cellSize?: number;
}

/**
 * Heat-map PNG of a confusion matrix [true][pred] with the count in each
 * cell, recall per row on the right and accuracy in the title.
 */
export function renderConfusionMatrix(matrix: readonly (readonly number[])[], opts: ConfusionRenderOptions = {}): Buffer {
  const n = matrix.length;
  const stats = confusionStats(matrix);
  const cell = Math.round(opts.cellSize ?? Math.max(28, Math.min(64, 560 / Math.max(1, n))));
  const names = Array.from({ length: n }, (_, i) => opts.classNames?.[i] ?? String(i));
  const tickFont = font(12);
  const countFont = font(Math.max(9, Math.min(14, Math.floor(cell / 3.6))));
  const m = newSurface(1, 1).ctx;
  const nameW = Math.min(120, Math.max(0, ...names.map((s) => textWidth(m, s, tickFont))));
  const pad = 16;
  const titleH = 44;
  const left = Math.max(pad + 22 + nameW + 8, pad + textWidth(m, 'precision', font(11)) + 8);
  const top = pad + titleH + 40;
  const recallW = 64;
  const W = Math.max(360, left + n * cell + 10 + recallW + pad);
  const H = top + n * cell + 8 + 14 + 26 + pad;
  const surface = newSurface(W, H);
  const { ctx } = surface;

  const title = opts.title ?? 'Confusion matrix';
  drawText(ctx, ellipsize(ctx, title, W - 2 * pad, font(16, 'bold')), W / 2, pad, font(16, 'bold'), TEXT_COLOR, 'center', 'top');
  drawText(ctx, `accuracy ${pct(stats.accuracy, 2)}  (${stats.correct} / ${stats.total})`, W / 2, pad + 22, font(12), MUTED_COLOR, 'center', 'top');
  if (n === 0) return toPng(surface);

  drawText(ctx, 'predicted', left + (n * cell) / 2, pad + titleH, font(13), TEXT_COLOR, 'center', 'top');
  ctx.save();
  ctx.translate(pad, top + (n * cell) / 2);
  ctx.rotate(-Math.PI / 2);
  drawText(ctx, 'true', 0, 0, font(13), TEXT_COLOR, 'center', 'top');
  ctx.restore();

  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const x = left + j * cell;
      const y = top + i * cell;
      const { bg, fg } = confusionCellColor(matrix, i, j);
      ctx.fillStyle = bg;
      ctx.fillRect(x, y, cell, cell);
      const v = matrix[i]?.[j] ?? 0;
      drawText(ctx, ellipsize(ctx, String(v), cell - 2, countFont), x + cell / 2, y + cell / 2, countFont, fg, 'center', 'middle');
    }
    drawText(ctx, ellipsize(ctx, names[i]!, nameW, tickFont), left - 6, top + i * cell + cell / 2, tickFont, TEXT_COLOR, 'right', 'middle');
    drawText(ctx, pct(stats.recall[i]!), left + n * cell + 10, top + i * cell + cell / 2, font(11), MUTED_COLOR, 'left', 'middle');
  }
  for (let j = 0; j < n; j++) {
    drawText(ctx, ellipsize(ctx, names[j]!, cell - 2, tickFont), left + j * cell + cell / 2, top - 4, tickFont, TEXT_COLOR, 'center', 'bottom');
  }
  drawText(ctx, 'recall', left + n * cell + 10, top - 4, font(11), MUTED_COLOR, 'left', 'bottom');
  // grid lines
  ctx.strokeStyle = '#e6e6e6';
  ctx.lineWidth = 1;
  for (let k = 0; k <= n; k++) {
    const p = Math.round(k * cell) + 0.5;
    ctx.beginPath(); ctx.moveTo(left + p, top); ctx.lineTo(left + p, top + n * cell); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(left, top + p); ctx.lineTo(left + n * cell, top + p); ctx.stroke();
  }
  ctx.strokeStyle = '#999999';
  ctx.strokeRect(left + 0.5, top + 0.5, n * cell, n * cell);
  drawText(ctx, 'precision', left - 6, top + n * cell + 8, font(11), MUTED_COLOR, 'right', 'top');
  for (let j = 0; j < n; j++) {
    const t = pct(stats.precision[j]!, cell >= 44 ? 1 : 0);
    drawText(ctx, ellipsize(ctx, t, cell, font(10)), left + j * cell + cell / 2, top + n * cell + 9, font(10), MUTED_COLOR, 'center', 'top');
  }
  drawText(ctx, 'blue: correct (by recall) · red: errors (by share of the true class)', W / 2, H - pad, font(11), '#888888', 'center', 'bottom');
  return toPng(surface);
}

/**
 * HTML table of a confusion matrix [true][pred] (inline colours, counts,
 * row totals and recall, column precision). All text is HTML-escaped.
 */
export function confusionMatrixHtml(matrix: readonly (readonly number[])[], classNames?: readonly string[]): string {
  const n = matrix.length;
  const stats = confusionStats(matrix);
  const name = (i: number): string => escapeHtml(classNames?.[i] ?? String(i));
  const out: string[] = [];
  out.push('<table class="confusion">');
  out.push(`<caption>Confusion matrix: rows = true class, columns = predicted class; accuracy ${escapeHtml(pct(stats.accuracy, 2))} (${stats.correct} / ${stats.total})</caption>`);
  out.push('<thead><tr><th class="corner">true \\ pred</th>');
  for (let j = 0; j < n; j++) out.push(`<th scope="col">${name(j)}</th>`);
  out.push('<th scope="col">total</th><th scope="col">recall</th></tr></thead><tbody>');
  for (let i = 0; i < n; i++) {
    out.push(`<tr><th scope="row">${name(i)}</th>`);
    for (let j = 0; j < n; j++) {
      const { bg, fg } = confusionCellColor(matrix, i, j);
      const v = Number(matrix[i]?.[j] ?? 0);
      const cls = i === j ? ' class="diag"' : '';
      out.push(`<td${cls} style="background:${bg};color:${fg}">${escapeHtml(String(v))}</td>`);
    }
    out.push(`<td class="total">${stats.rowTotals[i]}</td><td class="total">${escapeHtml(pct(stats.recall[i]!))}</td></tr>`);
  }
  out.push('</tbody><tfoot><tr><th scope="row">precision</th>');
  for (let j = 0; j < n; j++) out.push(`<td class="total">${escapeHtml(pct(stats.precision[j]!))}</td>`);
  out.push(`<td class="total">${stats.total}</td><td class="total">${escapeHtml(pct(stats.accuracy))}</td></tr></tfoot>`);
  out.push('</table>');
  return out.join('');
}
