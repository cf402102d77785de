/**
 * Turning a picture of a handwritten digit (PNG or JPEG) into an MNIST sample, the way MNIST
 * itself was made: grayscale, light ink on a dark background, the digit's bounding box scaled so
 * that its longer side is 20 px (aspect ratio kept, anti-aliased), then placed in a 28×28 field
 * so that its centre of mass is at the field's centre.
 */
import jpeg from 'jpeg-js';
import pngjs from 'pngjs';
import { IMAGE_PIXELS, IMAGE_SIZE } from '../data/mnist.js';

const { PNG } = pngjs;

/** The box the digit is scaled into, as in MNIST. */
export const DIGIT_BOX = 20;

export interface GrayImage {
  width: number;
  height: number;
  /** Row-major luminance 0..255 (white = 255). */
  pixels: Float32Array;
  /** Decoded from a lossy format (JPEG): faint compression noise surrounds the strokes. */
  lossy?: boolean;
}

/** Ink levels (of 255) below which a JPEG's pixels count as background: its ringing around strokes. */
export const LOSSY_NOISE_FLOOR = 16;

export class ImageFormatError extends Error {}

/** PNG or JPEG, told by their signatures (not by the file name). */
export function imageFormat(bytes: Uint8Array): 'png' | 'jpeg' | undefined {
  if (bytes.length >= 8 && bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47) return 'png';
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return 'jpeg';
  return undefined;
}

/**
 * Decodes a PNG or JPEG to grayscale luminance (ITU-R 601 weights). Transparent pixels are
 * composited over white, as a viewer shows them; an image whose colour is uniform and whose
 * content is all in the alpha channel (ink on a transparent canvas) uses alpha as the ink.
 */
export function decodeImage(bytes: Uint8Array): GrayImage {
  const format = imageFormat(bytes);
  let width: number;
  let height: number;
  let rgba: Uint8Array;
  try {
    if (format === 'png') {
      const png = PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      ({ width, height } = png);
      rgba = png.data;
    } else if (format === 'jpeg') {
      const img = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: true, maxMemoryUsageInMB: 1024 });
      ({ width, height } = img);
      rgba = img.data;
    } else {
      throw new ImageFormatError('not a PNG or JPEG file');
    }
  } catch (e) {
    if (e instanceof ImageFormatError) throw e;
    throw new ImageFormatError(`cannot decode the ${format === 'png' ? 'PNG' : 'JPEG'} data (${String((e as Error).message ?? e).split('\n')[0]})`);
  }
  if (width < 1 || height < 1) throw new ImageFormatError('empty image');
  const n = width * height;
  const pixels = new Float32Array(n);
  const alpha = new Float32Array(n);
  let lumMin = Infinity;
  let lumMax = -Infinity;
  let alphaMin = 255;
  let alphaMax = 0;
  for (let i = 0; i < n; i++) {
    const lum = 0.299 * rgba[4 * i] + 0.587 * rgba[4 * i + 1] + 0.114 * rgba[4 * i + 2];
    const a = rgba[4 * i + 3];
    alpha[i] = a;
    pixels[i] = (a / 255) * lum + (1 - a / 255) * 255;
    if (a > 0) {
      lumMin = Math.min(lumMin, lum);
      lumMax = Math.max(lumMax, lum);
    }
    alphaMin = Math.min(alphaMin, a);
    alphaMax = Math.max(alphaMax, a);
  }
  if (alphaMax - alphaMin > 32 && !(lumMax - lumMin > 32)) {
    // All the picture is in the alpha channel: ink is where the canvas is opaque.
    for (let i = 0; i < n; i++) pixels[i] = alpha[i];
  }
  return { width, height, pixels, lossy: format === 'jpeg' };
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Resamples a w×h image to nw×nh. Shrinking averages the source area each target pixel covers
 * (anti-aliasing, as MNIST's normalisation did); enlarging interpolates bilinearly.
 * Equal sizes give the image unchanged.
 */
export function resample(src: Float32Array, w: number, h: number, nw: number, nh: number): Float32Array {
  const horizontal = resampleAxis(src, w, h, nw, true);
  return resampleAxis(horizontal, nw, h, nh, false);
}

/** Resamples along x (`alongX`) or y; the other dimension is kept. */
function resampleAxis(src: Float32Array, w: number, h: number, n: number, alongX: boolean): Float32Array {
  const len = alongX ? w : h;
  const other = alongX ? h : w;
  const out = new Float32Array(alongX ? n * h : w * n);
  const at = (i: number, o: number): number => (alongX ? src[o * w + i] : src[i * w + o]);
  const put = (j: number, o: number, v: number): void => {
    if (alongX) out[o * n + j] = v;
    else out[j * w + o] = v;
  };
  if (n === len) return src.slice();
  const scale = len / n; // source pixels per target pixel
  for (let j = 0; j < n; j++) {
    if (scale > 1) {
      // area average over [j·scale, (j+1)·scale)
      const a = j * scale;
      const b = (j + 1) * scale;
      for (let o = 0; o < other; o++) {
        let sum = 0;
        for (let i = Math.floor(a); i < Math.ceil(b) && i < len; i++) {
          const cover = Math.min(b, i + 1) - Math.max(a, i);
          if (cover > 0) sum += cover * at(i, o);
        }
        put(j, o, sum / scale);
      }
    } else {
      // bilinear, pixel centres aligned
      const x = (j + 0.5) * scale - 0.5;
      const i0 = Math.max(0, Math.min(len - 1, Math.floor(x)));
      const i1 = Math.min(len - 1, i0 + 1);
      const t = Math.max(0, Math.min(1, x - i0));
      for (let o = 0; o < other; o++) put(j, o, (1 - t) * at(i0, o) + t * at(i1, o));
    }
  }
  return out;
}

export interface MnistSample {
  /** [28 × 28] uint8, light ink on black, as in the MNIST files. */
  pixels: Uint8Array;
  /** The picture was dark ink on a light background and was inverted. */
  inverted: boolean;
  /** The digit's bounding box in the source picture. */
  box: { x: number; y: number; width: number; height: number };
}

export class NoDigitError extends Error {}

/**
 * MNIST's preprocessing applied to any grayscale picture of one digit:
 *   1. invert when the border pixels' mean is light (dark digit on light paper);
 *   2. map the background (the border's median) to black and keep white white, ignoring
 *      background noise (three robust standard deviations of the border, and for JPEG at least
 *      LOSSY_NOISE_FLOOR levels, the compression's ringing around the strokes);
 *   3. crop to the ink's bounding box; scale its longer side to 20 px, keeping the aspect ratio;
 *   4. place it in 28×28 with its centre of mass at the centre (whole-pixel shift).
 */
export function toMnistSample(img: GrayImage): MnistSample {
  const { width: w, height: h } = img;
  const border: number[] = [];
  for (let x = 0; x < w; x++) {
    border.push(img.pixels[x]);
    if (h > 1) border.push(img.pixels[(h - 1) * w + x]);
  }
  for (let y = 1; y < h - 1; y++) {
    border.push(img.pixels[y * w]);
    if (w > 1) border.push(img.pixels[y * w + w - 1]);
  }
  const mean = border.reduce((a, b) => a + b, 0) / border.length;
  const inverted = mean > 127.5;
  const g = inverted ? img.pixels.map((v) => 255 - v) : img.pixels.slice();
  const borderInk = inverted ? border.map((v) => 255 - v) : border;
  const background = median(borderInk);
  const mad = median(borderInk.map((v) => Math.abs(v - background)));
  const threshold = background + Math.max(3 * 1.4826 * mad, img.lossy ? LOSSY_NOISE_FLOOR : 0);

  let maxInk = 0;
  let x0 = w;
  let y0 = h;
  let x1 = -1;
  let y1 = -1;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = y * w + x;
      const v = g[i] > threshold ? g[i] - background : 0;
      g[i] = v;
      if (v > 0) {
        maxInk = Math.max(maxInk, v);
        x0 = Math.min(x0, x);
        x1 = Math.max(x1, x);
        y0 = Math.min(y0, y);
        y1 = Math.max(y1, y);
      }
    }
  }
  if (x1 < 0 || maxInk * (255 / Math.max(1, 255 - background)) < 16) throw new NoDigitError('no digit found (the picture is blank)');
  const bw = x1 - x0 + 1;
  const bh = y1 - y0 + 1;
  // Levels: the background becomes black, white stays white (MNIST pictures come out unchanged).
  const gain = 255 / Math.max(1, 255 - background);
  const crop = new Float32Array(bw * bh);
  for (let y = 0; y < bh; y++) {
    for (let x = 0; x < bw; x++) crop[y * bw + x] = g[(y0 + y) * w + x0 + x] * gain;
  }

  const long = Math.max(bw, bh);
  const nw = bw >= bh ? DIGIT_BOX : Math.max(1, Math.round((bw * DIGIT_BOX) / long));
  const nh = bh >= bw ? DIGIT_BOX : Math.max(1, Math.round((bh * DIGIT_BOX) / long));
  const scaled = resample(crop, bw, bh, nw, nh);

  let mass = 0;
  let mx = 0;
  let my = 0;
  for (let y = 0; y < nh; y++) {
    for (let x = 0; x < nw; x++) {
      const v = scaled[y * nw + x];
      mass += v;
      mx += v * x;
      my += v * y;
    }
  }
  // MNIST put the centre of mass, in pixel indices, at (14, 14).
  const centre = IMAGE_SIZE / 2;
  const ox = Math.round(centre - mx / mass);
  const oy = Math.round(centre - my / mass);
  const pixels = new Uint8Array(IMAGE_PIXELS);
  for (let y = 0; y < nh; y++) {
    const ty = y + oy;
    if (ty < 0 || ty >= IMAGE_SIZE) continue;
    for (let x = 0; x < nw; x++) {
      const tx = x + ox;
      if (tx < 0 || tx >= IMAGE_SIZE) continue;
      pixels[ty * IMAGE_SIZE + tx] = Math.max(0, Math.min(255, Math.round(scaled[y * nw + x])));
    }
  }
  return { pixels, inverted, box: { x: x0, y: y0, width: bw, height: bh } };
}
