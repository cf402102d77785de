/**
 * Dropout masks drawn from per-sample keys, so the mask of a sample is the same whichever worker
 * (or the single node) computes its gradient. Kept entries are scaled by 1/(1−p) as in PyTorch.
 */
import type { DropoutSpec } from '../models/types.js';
import { hash32 } from '../util/rng.js';

/**
 * Per dropout layer, a Float32Array [n × units] of 0 and 1/(1−p). With `reuse` (the arrays of an
 * earlier call), the masks are written into those where they are large enough: views of them are
 * returned, and no step allocates masks again.
 */
export function dropoutMasks(specs: readonly DropoutSpec[], keys: Uint32Array, reuse?: Float32Array[]): Float32Array[] {
  const n = keys.length;
  return specs.map((spec, layer) => {
    const kept = reuse?.[layer];
    const mask = kept && kept.length >= n * spec.units ? kept.subarray(0, n * spec.units) : new Float32Array(n * spec.units);
    const keep = 1 / (1 - spec.p);
    // Compare on the integer hash: u < p  ⇔  hash < p·2^32.
    const threshold = spec.p * 4294967296;
    for (let i = 0; i < n; i++) {
      for (let u = 0; u < spec.units; u++) {
        mask[i * spec.units + u] = hash32(keys[i], layer + 1, u) < threshold ? 0 : keep;
      }
    }
    return mask;
  });
}
