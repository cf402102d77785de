/**
 * Momentum SGD with PyTorch's semantics: v ← μ·v + g;  w ← w − lr·v. On typed arrays, in place.
 *
 * The update is on every step's critical path (the workers wait for the new weights): where
 * WebAssembly SIMD runs it is one call of the `sgdStep` kernel (engine/simd/assembly/reduce.ts), with
 * the bits of the JavaScript loop below, which runs everywhere else. Measured on 2 vCPU Intel Xeon
 * (KVM), 2026-11-30, `node dist/bench/sgd-bench.js`: 113 µs a `net` update in the loop, 50 µs on the kernel,
 * its copies in and out included (docs/performance.md).
 */
import { type SimdKernels, growTo, instantiateSimd, simdAvailable } from '../engine/simd/module.js';

const FLOAT = 4;

/** The kernel, with room for the weights, the gradient and the velocity in its memory (views; their byteOffsets are the kernel's arguments). */
interface SgdKernel {
  kernels: SimdKernels;
  w: Float32Array;
  g: Float32Array;
  v: Float32Array;
}

export interface MomentumSgdOptions {
  /** false: the JavaScript loop even where WebAssembly SIMD runs (tests, comparisons). Default: the kernel where available. */
  simd?: boolean;
}

export class MomentumSgd {
  readonly velocity: Float32Array;
  private readonly kernel: SgdKernel | undefined;

  constructor(size: number, velocity?: Float32Array, opts: MomentumSgdOptions = {}) {
    this.velocity = velocity ?? new Float32Array(size);
    if ((opts.simd ?? simdAvailable()) && size > 0) {
      const { kernels, memory } = instantiateSimd(0);
      // Three arrays on 64-byte boundaries after the module's static data.
      const stride = Math.ceil((size * FLOAT) / 64) * 64;
      const base = Math.ceil(kernels.heapBase() / 64) * 64;
      growTo(memory, base + 3 * stride);
      const view = (at: number): Float32Array => new Float32Array(memory.buffer, at, size);
      this.kernel = { kernels, w: view(base), g: view(base + stride), v: view(base + 2 * stride) };
    }
  }

  /** Whether the update runs on the SIMD kernel (else the JavaScript loop). */
  get simd(): boolean {
    return this.kernel !== undefined;
  }

  /**
   * One update with the gradient `grad × gradScale` (the mean of a summed gradient: scale 1/count).
   * The scaling is done here, in the same pass, rather than in a pass of its own over `grad` (one
   * pass over the parameters instead of two, on the step's critical path); each value is rounded
   * to float32 where a stored copy would be, so the bits are those of scaling first, then updating.
   * `grad` is left as it was.
   */
  step(weights: Float32Array, grad: Float32Array, lr: number, momentum: number, gradScale = 1): void {
    const k = this.kernel;
    if (k && weights.length === k.w.length) {
      // Copied in and out: the weights, the gradient and the velocity stay the caller's arrays (the
      // checkpoint holds the velocity), and the copies cost less than the loop's arithmetic.
      k.w.set(weights);
      k.g.set(grad);
      k.v.set(this.velocity);
      k.kernels.sgdStep(k.w.byteOffset, k.g.byteOffset, k.v.byteOffset, weights.length, lr, momentum, gradScale);
      weights.set(k.w);
      this.velocity.set(k.v);
      return;
    }
    sgdLoop(weights, grad, this.velocity, lr, momentum, gradScale);
  }
}

/** The update in JavaScript: the bits the kernel reproduces. */
export function sgdLoop(weights: Float32Array, grad: Float32Array, v: Float32Array, lr: number, momentum: number, gradScale: number): void {
  for (let i = 0; i < weights.length; i++) {
    const vi = Math.fround(momentum * v[i] + Math.fround(grad[i] * gradScale));
    v[i] = vi;
    weights[i] -= lr * vi;
  }
}
