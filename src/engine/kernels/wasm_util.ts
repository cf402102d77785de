/**
 * Helpers shared by the wasm kernels in this folder: the slice of tfjs-backend-wasm's
 * BackendWasm they use, zero-copy Float32Array views onto the wasm heap, and calls into the
 * wasm backend's own registered kernels.
 *
 * Temporary buffers are plain heap allocations freed before the kernel returns: a
 * malloc/free pair of even 16 MiB costs a few microseconds in the wasm heap (freed blocks
 * are reused, the heap never shrinks), so keeping a scratch buffer alive between calls
 * bought nothing measurable and would show up as a live data id in leak checks.
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

export type { KernelFunc, TensorInfo };
