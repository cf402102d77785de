/**
 * Spot checks (--verify-fraction P): the coordinator recomputes a random fraction of the shards it
 * receives and compares each with what the worker sent. Part of the reducer's room (results in):
 * it decides which results to check and judges a recomputation against a result; the hub runs the
 * recomputation and acts on the verdict (evict, replace, reassign).
 *
 * Which shards are checked is drawn with node:crypto after each result has arrived, so a worker
 * cannot tell from anything it sees which of its results will be checked: with P > 0 every result
 * it sends is checked with probability P, and a worker that falsifies k shards of a step is caught
 * in that step with probability 1 − (1 − P)^k.
 */
import { randomInt } from 'node:crypto';

/**
 * Largest relative L2 error ‖sent − recomputed‖₂ / ‖recomputed‖₂ accepted between two different
 * engines (or two GPUs). Measured on real MNIST shards of the classic model (bench/verify-cost.ts,
 * 2 vCPU Intel Xeon, KVM, 2026-11-30): the wasm engine against webgpu on Mesa's lavapipe differs by
 * 2.4e-7 (16 samples) to 5.5e-7 (256 samples), and each engine's fused kernels against tfjs's own
 * ops by 1.6e-7 to 5.4e-7. 1e-3 leaves a margin of over 1000 for other GPUs and drivers, while a
 * falsified gradient, even one scaled by 1.01, lies beyond it.
 */
export const ENGINE_TOLERANCE = 1e-3;

/** What a worker's engine is, as its hello says and as the coordinator knows its own. */
export interface EngineIdentity {
  backend: string;
  device: string;
  adapter?: { description: string; architecture: string; vendor: string };
  /** What decides the engine's bits, e.g. "wasm (fused kernels)" (engine/backend.ts engineIdentity). */
  engine?: string;
  /** The build (util/build.ts buildId): another build may compute with other kernels. */
  build?: string;
}

/**
 * Whether a shard computed on `worker` must equal the coordinator's recomputation bit for bit. The
 * gradient of a shard is a pure function of the weights and the shard's pixels, labels and keys
 * (dropout and augmentation are seeded by the keys), in deterministic mode or not. With the same
 * build and the same engine kernels, the wasm engine gives the same bits on every machine
 * (engine/simd/assembly/kernels.ts) and the webgpu engine on the same adapter and driver
 * (engine/webgpu/kernels.ts). Any other pairing (fused against library kernels, another build,
 * another GPU, a multi-threaded engine) is compared within ENGINE_TOLERANCE.
 */
export function bitExact(coordinator: EngineIdentity, worker: EngineIdentity): boolean {
  if (coordinator.backend !== worker.backend) return false;
  if (coordinator.engine === undefined || coordinator.engine !== worker.engine || coordinator.build !== worker.build) return false;
  if (coordinator.backend === 'wasm') return true;
  if (coordinator.backend === 'webgpu') {
    const a = coordinator.adapter;
    const b = worker.adapter;
    return a !== undefined && b !== undefined && a.description === b.description && a.architecture === b.architecture && a.vendor === b.vendor;
  }
  return false;
}

/** How a result compares with its recomputation. */
export interface Comparison {
  match: boolean;
  /** Relative L2 error of the gradient (0 when the bits are equal). */
  error: number;
  /** In words, for the log: what was compared and what was found. */
  detail: string;
}

/** Compares a sent result with the coordinator's recomputation: bit for bit, or within ENGINE_TOLERANCE. */
export function compareResults(
  sent: { gradSum: Float32Array; lossSum: number },
  recomputed: { gradSum: Float32Array; lossSum: number },
  exact: boolean,
): Comparison {
  const a = sent.gradSum;
  const b = recomputed.gradSum;
  let diff2 = 0;
  let norm2 = 0;
  let differing = 0;
  for (let i = 0; i < b.length; i++) {
    const d = a[i] - b[i];
    // Bits, not values: -0 against 0 or two NaNs of different payloads count as different.
    if (d !== 0 || Object.is(a[i], -0) !== Object.is(b[i], -0)) differing++;
    diff2 += d * d;
    norm2 += b[i] * b[i];
  }
  const error = norm2 > 0 ? Math.sqrt(diff2 / norm2) : Math.sqrt(diff2);
  const lossError = Math.abs(sent.lossSum - recomputed.lossSum) / Math.max(1, Math.abs(recomputed.lossSum));
  if (exact) {
    const match = differing === 0 && Object.is(sent.lossSum, recomputed.lossSum);
    return { match, error, detail: match ? 'bit-identical' : `${differing} of ${b.length} gradient entries differ (relative L2 error ${error.toExponential(2)}), loss ${sent.lossSum} against ${recomputed.lossSum}; the same engine must give the same bits` };
  }
  const match = error <= ENGINE_TOLERANCE && lossError <= ENGINE_TOLERANCE;
  return {
    match,
    error,
    detail: `relative L2 error ${error.toExponential(2)}, loss error ${lossError.toExponential(2)} (tolerance ${ENGINE_TOLERANCE} between engines)`,
  };
}

/** Draws which results are checked: each with probability `fraction`, from a cryptographic RNG. */
export class SpotChecker {
  /** Resolution of the draw: 2^48, randomInt's widest range. */
  private static readonly RANGE = 2 ** 48 - 1;
  private readonly threshold: number;

  constructor(readonly fraction: number) {
    if (!(fraction >= 0 && fraction <= 1)) throw new RangeError(`verify fraction ${fraction} is not in [0, 1]`);
    this.threshold = Math.round(fraction * SpotChecker.RANGE);
  }

  /** Whether to check the result that has just arrived. */
  draw(): boolean {
    if (this.fraction === 0) return false;
    if (this.fraction === 1) return true;
    return randomInt(SpotChecker.RANGE) < this.threshold;
  }
}
