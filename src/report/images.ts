/**
 * Grids of grayscale images (misclassified digits, feature maps) as PNG.
 *
 * Layout (all in px), so callers/tests can predict the size:
 *   scale(cell)  = cell.scale ?? (cellSize ? max(1, floor(cellSize / max(w, h))) : spec.scale ?? 2)
 *   slotImgW/H   = max over all cells of width*scale / height*scale
 *   slotW        = max(slotImgW, min(widest caption + 4, 200))   (captions only)
 *   lineH        = slotImgH + captionBand (0 when no cell has a caption)
 *   cols         = max over rows of min(#cells, maxColumns ?? #cells)
 *   width        = 2*padding + labelColumn + cols*slotW + (cols-1)*gap
 *   height       = 2*padding + titleBand + Σ_rows(lines*lineH + (lines-1)*gap) + (rows-1)*rowGap
 * where labelColumn and titleBand are 0 without row labels / title.
 */
import type { SKRSContext2D } from '@napi-rs/canvas';
import { MUTED_COLOR, TEXT_COLOR, drawText, ellipsize, font, newSurface, textWidth, toPng } from './draw.js';
import type { ImageCell, ImageGridSpec, ImageRow } from './types.js';

export type { ImageCell, ImageGridSpec, ImageRow } from './types.js';

const CAPTION_MAX_W = 200;
const LABEL_FONT = font(12, 'bold');
const TITLE_FONT = font(16, 'bold');

function cellScale(c: ImageCell, spec: ImageGridSpec): number {
  let s: number;
  if (c.scale !== undefined) s = c.scale;
  else if (spec.cellSize !== undefined) s = Math.floor(spec.cellSize / Math.max(1, c.width, c.height));
  else s = spec.scale ?? 2;
  return Math.max(1, Math.floor(s));
}

function validate(c: ImageCell): void {
  if (!Number.isInteger(c.width) || !Number.isInteger(c.height) || c.width < 1 || c.height < 1) {
    throw new RangeError(`image cell has invalid size ${c.width}x${c.height}`);
  }
  if (c.pixels.length < c.width * c.height) {
    throw new RangeError(`image cell has ${c.pixels.length} pixels, expected ${c.width * c.height}`);
  }
}

/** Range used for a cell: its own, the grid's, or its finite min/max. */
function cellRange(c: ImageCell, spec: ImageGridSpec): [number, number] {
  const r = c.range ?? spec.range;
  if (r) return [r[0], r[1]];
  let lo = Infinity;
  let hi = -Infinity;
  const n = c.width * c.height;
  for (let i = 0; i < n; i++) {
    const v = c.pixels[i]!;
    if (!Number.isFinite(v)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (lo > hi) return [0, 1];
  return [lo, hi];
}

/** Draws one cell upscaled (nearest neighbour) at integer position (x, y). NaN pixels are magenta. */
function putCell(ctx: SKRSContext2D, c: ImageCell, s: number, x: number, y: number, spec: ImageGridSpec): void {
  const [lo, hi] = cellRange(c, spec);
  const span = hi - lo;
  const W = c.width * s;
  const H = c.height * s;
  const img = ctx.createImageData(W, H);
  const d = img.data;
  const invert = spec.invert === true;
  for (let r = 0; r < c.height; r++) {
    for (let col = 0; col < c.width; col++) {
      const v = c.pixels[r * c.width + col]!;
      let R: number;
      let G: number;
      let B: number;
      if (Number.isNaN(v)) { R = 255; G = 0; B = 255; } else {
        let t = span !== 0 && Number.isFinite(span) ? (v - lo) / span : v > lo ? 1 : 0;
        if (v === Infinity) t = 1;
        if (v === -Infinity) t = 0;
        t = Math.min(1, Math.max(0, t));
        let g = Math.round(t * 255);
        if (invert) g = 255 - g;
        R = G = B = g;
      }
      for (let dy = 0; dy < s; dy++) {
        let o = ((r * s + dy) * W + col * s) * 4;
        for (let dx = 0; dx < s; dx++) {
          d[o] = R; d[o + 1] = G; d[o + 2] = B; d[o + 3] = 255;
          o += 4;
        }
      }
    }
  }
  ctx.putImageData(img, x, y);
}

export interface ImageGridLayout {
  width: number;
  height: number;
  cols: number;
  slotW: number;
  slotImgH: number;
  lineH: number;
  labelW: number;
  titleH: number;
  rowGap: number;
}

/** Computes the pixel layout of a grid (see the formula at the top of this file). */
export function imageGridLayout(spec: ImageGridSpec, ctx?: SKRSContext2D): ImageGridLayout {
  const m = ctx ?? newSurface(1, 1).ctx;
  const pad = spec.padding ?? 10;
  const gap = spec.gap ?? 6;
  const capFontPx = spec.captionFontSize ?? 11;
  const capFont = font(capFontPx);
  let slotImgW = 0;
  let slotImgH = 0;
  let capLines = 0;
  let capW = 0;
  let labelTextW = 0;
  let cols = 0;
  let wraps = false;
  for (const row of spec.rows) {
    const n = row.cells.length;
    const perLine = Math.max(1, Math.min(n, spec.maxColumns ?? n));
    cols = Math.max(cols, n === 0 ? 0 : perLine);
    if (n > perLine) wraps = true;
    if (row.label) for (const l of row.label.split('\n')) labelTextW = Math.max(labelTextW, textWidth(m, l, LABEL_FONT));
    for (const c of row.cells) {
      const s = cellScale(c, spec);
      slotImgW = Math.max(slotImgW, c.width * s);
      slotImgH = Math.max(slotImgH, c.height * s);
      if (c.caption !== undefined && c.caption !== '') {
        const lines = c.caption.split('\n');
        capLines = Math.max(capLines, lines.length);
        for (const l of lines) capW = Math.max(capW, textWidth(m, l, capFont));
      }
    }
  }
  const slotW = capLines > 0 ? Math.max(slotImgW, Math.ceil(Math.min(capW + 4, CAPTION_MAX_W))) : slotImgW;
  const captionBand = capLines > 0 ? capLines * (capFontPx + 3) + 4 : 0;
  const lineH = slotImgH + captionBand;
  const labelW = spec.rows.some((r) => r.label) ? Math.ceil(labelTextW) + 14 : 0;
  const titleH = spec.title ? 30 : 0;
  const rowGap = spec.rowGap ?? (wraps ? 3 * gap : gap);
  let height = 2 * pad + titleH;
  spec.rows.forEach((row, i) => {
    const n = row.cells.length;
    const perLine = Math.max(1, Math.min(n, spec.maxColumns ?? n));
    const lines = Math.max(1, Math.ceil(n / perLine));
    height += lines * lineH + (lines - 1) * gap + (i > 0 ? rowGap : 0);
  });
  const width = 2 * pad + labelW + cols * slotW + Math.max(0, cols - 1) * gap;
  return { width, height, cols, slotW, slotImgH, lineH, labelW, titleH, rowGap };
}

/**
 * Renders rows of grayscale images into one PNG. Each image is normalised to
 * black..white by its own min/max (or `range`), upscaled by an integer factor
 * (nearest neighbour), centred in a uniform slot, with an optional caption
 * below; rows may carry a label on the left and wrap after `maxColumns`.
 * A grid without any cell renders a small "No images" PNG.
 */
export function renderImageGrid(spec: ImageGridSpec): Buffer {
  for (const r of spec.rows) for (const c of r.cells) validate(c);
  if (!spec.rows.some((r) => r.cells.length > 0)) {
    const s = newSurface(240, 60);
    drawText(s.ctx, spec.title ? `${spec.title}: no images` : 'No images', 120, 30, font(13), '#999999', 'center', 'middle');
    return toPng(s);
  }
  const L = imageGridLayout(spec);
  const surface = newSurface(L.width, L.height);
  const { ctx } = surface;
  const pad = spec.padding ?? 10;
  const gap = spec.gap ?? 6;
  const capFontPx = spec.captionFontSize ?? 11;
  const capFont = font(capFontPx);
  if (spec.title) {
    drawText(ctx, ellipsize(ctx, spec.title, L.width - 2 * pad, TITLE_FONT), L.width / 2, pad + 4, TITLE_FONT, TEXT_COLOR, 'center', 'top');
  }
  let y = pad + L.titleH;
  spec.rows.forEach((row: ImageRow, ri) => {
    if (ri > 0) {
      if (L.rowGap >= 3 * gap && L.rowGap >= 6) {
        const sepY = Math.round(y + L.rowGap / 2) + 0.5;
        ctx.strokeStyle = '#d8d8d8';
        ctx.lineWidth = 1;
        ctx.beginPath();
        ctx.moveTo(pad, sepY);
        ctx.lineTo(L.width - pad, sepY);
        ctx.stroke();
      }
      y += L.rowGap;
    }
    const n = row.cells.length;
    const perLine = Math.max(1, Math.min(n, spec.maxColumns ?? n));
    const lines = Math.max(1, Math.ceil(n / perLine));
    const rowH = lines * L.lineH + (lines - 1) * gap;
    if (row.label) {
      const ls = row.label.split('\n');
      const lh = 16;
      const top = y + Math.min(rowH, L.slotImgH) / 2 - (ls.length * lh) / 2;
      ls.forEach((l, k) => drawText(ctx, ellipsize(ctx, l, L.labelW - 10, LABEL_FONT), pad, top + k * lh + lh / 2, LABEL_FONT, TEXT_COLOR, 'left', 'middle'));
    }
    row.cells.forEach((c, i) => {
      const line = Math.floor(i / perLine);
      const col = i % perLine;
      const sx = pad + L.labelW + col * (L.slotW + gap);
      const sy = y + line * (L.lineH + gap);
      const s = cellScale(c, spec);
      const w = c.width * s;
      const h = c.height * s;
      putCell(ctx, c, s, Math.round(sx + (L.slotW - w) / 2), Math.round(sy + (L.slotImgH - h) / 2), spec);
      if (c.caption) {
        c.caption.split('\n').forEach((l, k) => {
          drawText(ctx, ellipsize(ctx, l, L.slotW, capFont), sx + L.slotW / 2, sy + L.slotImgH + 3 + k * (capFontPx + 3), capFont, MUTED_COLOR, 'center', 'top');
        });
      }
    });
    y += rowH;
  });
  return toPng(surface);
}

// ---------------------------------------------------------------- helpers

/**
 * Splits one activation tensor of a single image into per-channel cells.
 * `layout` 'hwc' (TensorFlow/tfjs NHWC without N, the default) or 'chw'.
 * Captions are `${prefix}${channel}` when `captionPrefix` is given.
 */
export function channelsToCells(
  data: ArrayLike<number>, height: number, width: number, channels: number,
  layout: 'hwc' | 'chw' = 'hwc', captionPrefix?: string,
): ImageCell[] {
  if (data.length < height * width * channels) {
    throw new RangeError(`activation has ${data.length} values, expected ${height * width * channels}`);
  }
  const out: ImageCell[] = [];
  for (let ch = 0; ch < channels; ch++) {
    const px = new Float32Array(height * width);
    for (let i = 0; i < height * width; i++) {
      px[i] = layout === 'hwc' ? data[i * channels + ch]! : data[ch * height * width + i]!;
    }
    const cell: ImageCell = { pixels: px, width, height };
    if (captionPrefix !== undefined) cell.caption = `${captionPrefix}${ch}`;
    out.push(cell);
  }
  return out;
}

export interface MisclassifiedItem {
  pixels: ArrayLike<number>;
  width: number;
  height: number;
  pred: number | string;
  truth: number | string;
}

/** Grid spec for misclassified examples: captions "pred P / true T", `perRow` per row. */
export function misclassifiedGridSpec(
  items: readonly MisclassifiedItem[], perRow = 10, extra: Partial<ImageGridSpec> = {},
): ImageGridSpec {
  const rows: ImageRow[] = [];
  for (let i = 0; i < items.length; i += perRow) {
    rows.push({
      cells: items.slice(i, i + perRow).map((it) => ({
        pixels: it.pixels, width: it.width, height: it.height, caption: `pred ${it.pred} / true ${it.truth}`,
      })),
    });
  }
  return { title: 'Misclassified test images', scale: 2, ...extra, rows };
}

export interface FeatureMapLayer {
  /** Layer name shown in the captions, e.g. "conv1". */
  name: string;
  /** This image's activation, height × width × channels. */
  data: ArrayLike<number>;
  height: number;
  width: number;
  channels: number;
  layout?: 'hwc' | 'chw';
}

export interface FeatureMapExample {
  /** Row label, e.g. "#0 (label 7)". */
  label?: string;
  input: ImageCell;
  layers: readonly FeatureMapLayer[];
}

/**
 * Grid spec for feature maps: one row group per example holding the input
 * image followed by every channel of every layer (captions "input",
 * "conv1 #0", …). Cells are scaled to about `cellSize` px (default 56).
 */
export function featureMapGridSpec(
  examples: readonly FeatureMapExample[], extra: Partial<ImageGridSpec> = {},
): ImageGridSpec {
  const rows: ImageRow[] = examples.map((ex) => {
    const cells: ImageCell[] = [{ ...ex.input, caption: ex.input.caption ?? 'input' }];
    for (const l of ex.layers) {
      cells.push(...channelsToCells(l.data, l.height, l.width, l.channels, l.layout ?? 'hwc', `${l.name} #`));
    }
    const row: ImageRow = { cells };
    if (ex.label !== undefined) row.label = ex.label;
    return row;
  });
  return { title: 'Feature maps', cellSize: 56, maxColumns: 12, ...extra, rows };
}
