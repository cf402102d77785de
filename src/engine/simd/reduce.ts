/**
 * The reduction arena: the shard slots a step's gradients are received into and the running sum
 * they are added to, all in one WebAssembly memory, so that adding a shard and checking it for
 * non-finite values are single calls of the SIMD kernels of assembly/reduce.ts. At 64 workers the
 * coordinator does both once per worker per step: measured on 2 vCPU Intel Xeon (KVM), Node 20,
 * 2026-11-30, 21 840 floats (`node dist/bench/reduce-bench.js`), the JavaScript loops take
 * ~50-160 µs per shard, the kernels a few µs.
 *
 * Where WebAssembly SIMD is unavailable (`simdAvailable()` false) the same arena runs on a plain
 * ArrayBuffer with the JavaScript loops below; the bits are the same either way.
 */
import { type SimdKernels, growTo, instantiateSimd, simdAvailable } from './module.js';

const FLOAT = 4;
/** Every buffer starts on a cache line. */
const ALIGN = 64;

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
}

export class ReductionArena {
  /** Whether the kernels run (else the JavaScript loops). */
  readonly simd: boolean;
  private readonly kernels: SimdKernels | undefined;
  private readonly memory: WebAssembly.Memory | undefined;
  private buffer: ArrayBuffer;
  /** Byte offset of the running sum; the slots follow it, `stride` bytes apart. */
  private readonly base: number;
  private readonly stride: number;
  private sumView: Float32Array;
  private slotViews: Float32Array[] = [];

  /** An arena for gradients of `params` floats, with room for no slot yet (see `reserve`). */
  constructor(
    readonly params: number,
    opts: ArenaOptions = {},
  ) {
    this.simd = opts.simd ?? simdAvailable();
    this.stride = Math.ceil((params * FLOAT) / ALIGN) * ALIGN;
    if (this.simd) {
      const instance = instantiateSimd(0);
      this.kernels = instance.kernels;
      this.memory = instance.memory;
      this.base = Math.ceil(this.kernels.heapBase() / ALIGN) * ALIGN;
      growTo(this.memory, this.base + this.stride);
      this.buffer = this.memory.buffer;
    } else {
      this.base = 0;
      this.buffer = new ArrayBuffer(this.stride);
    }
    this.sumView = new Float32Array(this.buffer, this.base, params);
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
    const bytes = this.base + this.stride * (1 + count);
    if (this.memory) {
      growTo(this.memory, bytes);
      this.buffer = this.memory.buffer;
    } else if (bytes > this.buffer.byteLength) {
      const grown = new ArrayBuffer(bytes);
      new Uint8Array(grown).set(new Uint8Array(this.buffer));
      this.buffer = grown;
    }
    this.sumView = new Float32Array(this.buffer, this.base, this.params);
    this.slotViews = Array.from({ length: count }, (_, i) => new Float32Array(this.buffer, this.base + this.stride * (1 + i), this.params));
  }

  /** Slot `i`'s buffer (valid until the next `reserve` that grows the arena). */
  slot(i: number): Float32Array {
    return this.slotViews[i];
  }

  /** The running sum (valid until the next `reserve` that grows the arena). */
  get sum(): Float32Array {
    return this.sumView;
  }

  clearSum(): void {
    this.sumView.fill(0);
  }

  /** sum += slot i, in float32. */
  addSlot(i: number): void {
    const g = this.slotViews[i];
    if (this.kernels) this.kernels.addInto(this.sumView.byteOffset, g.byteOffset, this.params);
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
    if (!this.kernels || view.buffer !== this.buffer) return allFiniteLoop(view, from, end);
    return this.kernels.allFinite(view.byteOffset + from * FLOAT, end - from) === 1;
  }
}
