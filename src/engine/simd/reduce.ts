/**
 * The reduction arena: the shard slots a step's gradients are received into and the running sum
 * they are added to, all in one WebAssembly memory, so that adding a shard, checking it for
 * non-finite values and widening one that travelled in 16 bits are single calls of the SIMD kernels
 * of assembly/reduce.ts. The coordinator does these once per result, so at 64 workers 64 times a step: measured on 2 vCPU Intel Xeon (KVM),
 * Node 20, 2026-11-30, 21 840 floats, 64 results a step (`node dist/bench/reduce-bench.js`), the
 * check and the addition took 70-150 µs per result in JavaScript loops, 5-8 µs on the kernels.
 *
 * Where WebAssembly SIMD is unavailable (`simdAvailable()` false), or a step needs more slots than a
 * 32-bit memory holds (4 GiB), the arena keeps its buffers in ordinary typed arrays and runs the
 * JavaScript loops below instead; the bits are the same either way.
 */
import { type SimdKernels, growTo, instantiateSimd, simdAvailable } from './module.js';

const FLOAT = 4;
/** Every buffer in the memory starts on a cache line. */
const ALIGN = 64;
const alignUp = (bytes: number): number => Math.ceil(bytes / ALIGN) * ALIGN;

/** The 16-bit formats `widen` reads (protocol/grad-dtype.ts describes them). */
export type HalfFormat = 'float16' | 'bfloat16';

/** acc[i] += g[i] for every i of `acc`, in float32: the JavaScript form of the `addInto` kernel. */
export function accumulate(acc: Float32Array, g: Float32Array): void {
  for (let i = 0; i < acc.length; i++) acc[i] += g[i];
}

/** Whether a[from…end) holds no ±Infinity or NaN: the JavaScript form of the `allFinite` kernel. */
export function allFiniteLoop(a: Float32Array, from: number, end: number): boolean {
  for (let i = from; i < end; i++) if (!Number.isFinite(a[i])) return false;
  return true;
}

export interface ArenaOptions {
  /** false: the JavaScript loops even where WebAssembly SIMD runs (tests, comparisons). Default: SIMD where available. */
  simd?: boolean;
  /** The most bytes the WebAssembly memory may grow to (default 4 GiB; tests set less). */
  maxBytes?: number;
}

export class ReductionArena {
  /**
   * The kernels and their memory, undefined once the arena runs on the JavaScript loops. From
   * `base` on the memory holds the sum, `stride` bytes; then a staging area of `stride / 2` bytes,
   * where 16-bit values are copied to be widened; then the slots, `stride` bytes apart, from `slots`.
   */
  private wasm: { kernels: SimdKernels; memory: WebAssembly.Memory; base: number; staging: number; slots: number } | undefined;
  private readonly stride: number;
  private sumView: Float32Array;
  private slotViews: Float32Array[] = [];

  /** An arena for gradients of `params` floats, with room for no slot yet (see `reserve`). */
  constructor(
    readonly params: number,
    opts: ArenaOptions = {},
  ) {
    this.stride = alignUp(params * FLOAT);
    if (opts.simd ?? simdAvailable()) {
      const { kernels, memory } = instantiateSimd(0, opts.maxBytes);
      const base = alignUp(kernels.heapBase());
      const staging = base + this.stride;
      const slots = staging + alignUp(params * 2);
      this.wasm = { kernels, memory, base, staging, slots };
      try {
        growTo(memory, slots);
      } catch (e) {
        if (!(e instanceof RangeError)) throw e;
        this.wasm = undefined;
      }
    }
    this.sumView = this.wasm ? new Float32Array(this.wasm.memory.buffer, this.wasm.base, params) : new Float32Array(params);
  }

  /** Whether the kernels run (else the JavaScript loops). */
  get simd(): boolean {
    return this.wasm !== undefined;
  }

  /** How many slots there are. */
  get slots(): number {
    return this.slotViews.length;
  }

  /**
   * Room for at least `count` slots. Growing the memory moves it: every view handed out before
   * (`slot`, `sum`) is then stale, so take them again after calling this. The contents stay.
   */
  reserve(count: number): void {
    if (count <= this.slotViews.length) return;
    if (this.wasm) {
      const { memory, base, slots } = this.wasm;
      try {
        growTo(memory, slots + this.stride * count);
        this.sumView = new Float32Array(memory.buffer, base, this.params);
        this.slotViews = Array.from({ length: count }, (_, i) => new Float32Array(memory.buffer, slots + this.stride * i, this.params));
        return;
      } catch (e) {
        if (!(e instanceof RangeError)) throw e;
        // More slots than the memory can hold: on to the JavaScript loops, with what the buffers hold.
        this.wasm = undefined;
        this.sumView = this.sumView.slice();
        this.slotViews = this.slotViews.map((v) => v.slice());
      }
    }
    while (this.slotViews.length < count) this.slotViews.push(new Float32Array(this.params));
  }

  /** Slot `i`'s buffer (valid until the next `reserve` that adds slots). */
  slot(i: number): Float32Array {
    return this.slotViews[i];
  }

  /** The running sum (valid until the next `reserve` that adds slots). */
  get sum(): Float32Array {
    return this.sumView;
  }

  clearSum(): void {
    this.sumView.fill(0);
  }

  /**
   * Widens `bytes`, 16-bit values of `format` (little-endian, any alignment), into slot `i` from
   * element `at` on: the values protocol/grad-dtype.ts's `decodeTensor` gives, a NaN's payload aside.
   * Only with the kernels (`simd`); without them, decode with `decodeTensor`.
   */
  widen(i: number, bytes: Uint8Array, format: HalfFormat, at: number): void {
    if (!this.wasm) throw new Error('widen needs the SIMD kernels; decode with decodeTensor');
    const n = bytes.byteLength >>> 1;
    const dst = this.slotViews[i];
    if (at < 0 || at + n > dst.length) throw new RangeError(`[${at}, ${at + n}) is outside a slot of ${dst.length} floats`);
    const { kernels, memory, staging } = this.wasm;
    new Uint8Array(memory.buffer, staging, n * 2).set(bytes.subarray(0, n * 2));
    if (format === 'float16') kernels.widenFloat16(staging, dst.byteOffset + at * FLOAT, n);
    else kernels.widenBfloat16(staging, dst.byteOffset + at * FLOAT, n);
  }

  /** sum += slot i, in float32. */
  addSlot(i: number): void {
    const g = this.slotViews[i];
    if (this.wasm) this.wasm.kernels.addInto(this.sumView.byteOffset, g.byteOffset, this.params);
    else accumulate(this.sumView, g);
  }

  /** sum = ((0 + slot 0) + slot 1) + … + slot count−1, in float32: the shard-ordered sum. */
  sumSlots(count: number): void {
    this.clearSum();
    for (let i = 0; i < count; i++) this.addSlot(i);
  }

  /** Whether view[from…end) holds no ±Infinity or NaN; `view` is one of this arena's (any other array is checked too, by the loop). */
  allFinite(view: Float32Array, from: number, end: number): boolean {
    if (end <= from) return true;
    if (from < 0 || end > view.length) throw new RangeError(`[${from}, ${end}) is outside a view of ${view.length} floats`);
    if (!this.wasm || view.buffer !== this.wasm.memory.buffer) return allFiniteLoop(view, from, end);
    return this.wasm.kernels.allFinite(view.byteOffset + from * FLOAT, end - from) === 1;
  }
}
