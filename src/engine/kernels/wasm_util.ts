/**
 * Helpers shared by the wasm kernels in this folder: the slice of tfjs-backend-wasm's
 * BackendWasm they use, zero-copy Float32Array views onto the wasm heap, calls into the
 * wasm backend's own registered kernels, and a reusable heap scratch buffer.
 *
 * Heap views go stale whenever the wasm heap grows (any allocation, including one made by
 * a kernel we call), so every kernel here takes its views only after its last allocation
 * and takes them again after calling another kernel.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { DataType, KernelFunc, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs-core';

export type WasmBackend = BackendWasm;

/** What tfjs passes to a kernel function. */
export interface KernelArgs {
  inputs: NamedTensorInfoMap;
  backend: {};
  attrs?: NamedAttrMap;
}

export function input(inputs: NamedTensorInfoMap, name: string, kernel: string): TensorInfo {
  const t = inputs[name];
  if (t === undefined) throw new Error(`${kernel}: missing input '${name}'`);
  return t;
}

/** A float32 view onto a wasm tensor's memory (no copy; valid until the heap next grows). */
export function f32(backend: WasmBackend, info: TensorInfo): Float32Array {
  return backend.typedArrayFromHeap(info) as Float32Array;
}

/** A float32 view of the whole wasm heap (valid until the heap next grows). */
export function heapF32(backend: WasmBackend): Float32Array {
  return new Float32Array((backend.wasm as unknown as { HEAPU8: Uint8Array }).HEAPU8.buffer);
}

/** Index of a float32 tensor's first element in `heapF32(backend)`. */
export function offsetF32(backend: WasmBackend, info: TensorInfo): number {
  return backend.dataIdMap.get(info.dataId)!.memoryOffset / 4;
}

/** Allocates an uninitialised tensor on the wasm heap with a fresh data id. */
export function alloc(backend: WasmBackend, shape: number[], dtype: DataType = 'float32'): TensorInfo {
  return backend.makeOutput(shape, dtype);
}

/** Calls the wasm backend's own implementation of `kernelName` (looked up on each call). */
export function callWasmKernel(
  kernelName: string,
  backend: WasmBackend,
  inputs: NamedTensorInfoMap,
  attrs: NamedAttrMap,
): TensorInfo {
  const config = tf.getKernel(kernelName, 'wasm');
  if (config === undefined) throw new Error(`wasm kernel ${kernelName} is not registered`);
  const out = config.kernelFunc({ inputs, backend, attrs });
  if (Array.isArray(out)) throw new Error(`wasm kernel ${kernelName} returned several outputs`);
  return out;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

export function tupleAllOne(v: unknown): boolean {
  if (v === undefined || v === null) return true;
  if (typeof v === 'number') return v === 1;
  return Array.isArray(v) && v.every((x) => x === 1);
}

// ---------------------------------------------------------------------------------------
// Scratch: one heap buffer per backend, grown on demand and kept for the next call as long
// as it stays under SCRATCH_KEEP_FLOATS. Kernels only use it as an *input* that the wasm
// kernels we call read (never as the `b`/filter operand, which XNNPACK caches by data id).

/** Largest scratch buffer kept between calls (16 MiB of float32). */
export const SCRATCH_KEEP_FLOATS = 4 * 1024 * 1024;

interface Scratch {
  dataId: object;
  capacity: number;
}

const scratchByBackend = new WeakMap<WasmBackend, Scratch>();

/**
 * A tensor of the given shape backed by the shared scratch buffer (its contents are
 * undefined). Pass it to `releaseScratch` when done; never dispose it yourself.
 */
export function borrowScratch(backend: WasmBackend, shape: number[]): TensorInfo {
  const size = shape.reduce((a, b) => a * b, 1);
  let s = scratchByBackend.get(backend);
  if (s !== undefined && (!backend.dataIdMap.has(s.dataId) || s.capacity < size)) {
    if (backend.dataIdMap.has(s.dataId)) backend.disposeData(s.dataId, true);
    scratchByBackend.delete(backend);
    s = undefined;
  }
  if (s === undefined) {
    const capacity = Math.max(size, 1);
    const info = backend.makeOutput([capacity], 'float32');
    s = { dataId: info.dataId, capacity };
    scratchByBackend.set(backend, s);
  }
  return { dataId: s.dataId, shape, dtype: 'float32' };
}

/** Ends a borrow; frees the buffer when it is too large to keep around. */
export function releaseScratch(backend: WasmBackend): void {
  const s = scratchByBackend.get(backend);
  if (s !== undefined && s.capacity > SCRATCH_KEEP_FLOATS) {
    if (backend.dataIdMap.has(s.dataId)) backend.disposeData(s.dataId, true);
    scratchByBackend.delete(backend);
  }
}

/** Frees the scratch buffer now (tests, or before a memory-hungry phase). */
export function freeScratch(backend: WasmBackend): void {
  const s = scratchByBackend.get(backend);
  if (s !== undefined) {
    if (backend.dataIdMap.has(s.dataId)) backend.disposeData(s.dataId, true);
    scratchByBackend.delete(backend);
  }
}

export type { KernelFunc, TensorInfo };
