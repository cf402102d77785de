/**
 * Seeded data augmentation: a small random affine transform of each training image (rotation,
 * scale, shift), drawn from the sample's key like its dropout masks, so that every worker
 * produces the same augmented sample. Bilinear sampling on the uint8 image, then the usual
 * normalisation.
 */
import { IMAGE_PIXELS, IMAGE_SIZE, normalisePixels } from '../data/mnist.js';
import { keyedUniform } from '../util/rng.js';

export interface AugmentOptions {
  /** Largest rotation, degrees. */
  maxRotateDeg: number;
  /** Largest relative change of scale. */
  maxScale: number;
  /** Largest shift, pixels. */
  maxShift: number;
}

/** Stream ids for keyedUniform, apart from the dropout layers' (1, 2, …). */
const STREAM = 0xa09;

/** Normalised, augmented images [n × 28 × 28] into `out`. */
export function augmentAndNormalise(pixels: Uint8Array, keys: Uint32Array, opts: AugmentOptions, out: Float32Array): Float32Array {
  const n = keys.length;
  const warped = new Uint8Array(IMAGE_PIXELS);
  const c = (IMAGE_SIZE - 1) / 2;
  for (let s = 0; s < n; s++) {
    const u = (i: number): number => 2 * keyedUniform(keys[s], STREAM, i) - 1; // in [−1, 1)
    const angle = (u(0) * opts.maxRotateDeg * Math.PI) / 180;
    const scale = 1 + u(1) * opts.maxScale;
    const tx = u(2) * opts.maxShift;
    const ty = u(3) * opts.maxShift;
    // Inverse map: for each output pixel, where in the source it comes from.
    const cos = Math.cos(angle) / scale;
    const sin = Math.sin(angle) / scale;
    const src = pixels.subarray(s * IMAGE_PIXELS, (s + 1) * IMAGE_PIXELS);
    for (let y = 0; y < IMAGE_SIZE; y++) {
      for (let x = 0; x < IMAGE_SIZE; x++) {
        const dx = x - c - tx;
        const dy = y - c - ty;
        const sx = cos * dx + sin * dy + c;
        const sy = -sin * dx + cos * dy + c;
        const x0 = Math.floor(sx);
        const y0 = Math.floor(sy);
        const fx = sx - x0;
        const fy = sy - y0;
        const at = (yy: number, xx: number): number => (yy < 0 || yy >= IMAGE_SIZE || xx < 0 || xx >= IMAGE_SIZE ? 0 : src[yy * IMAGE_SIZE + xx]);
        const v = (1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1)) + fy * ((1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
        warped[y * IMAGE_SIZE + x] = Math.round(v);
      }
    }
    normalisePixels(warped, out.subarray(s * IMAGE_PIXELS, (s + 1) * IMAGE_PIXELS));
  }
  return out;
}
