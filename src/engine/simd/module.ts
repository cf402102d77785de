/**
 * Loads the fused CPU engine's WebAssembly kernels (assembly/kernels.ts, built to kernels.wasm by
 * `npm run build:wasm`). Each call makes a new instance with its own memory: no module-level state.
 */
import { readFileSync } from 'node:fs';

/** The kernels' exports; every pointer is a byte offset into `memory` (see assembly/kernels.ts). */
export interface SimdKernels {
  /** The first byte the caller may use: the module's static data lies below. */
  heapBase(): number;
  convForward(x: number, n: number, H: number, W: number, Ci: number, w: number, b: number, K: number, pad: number, Co: number, y: number): void;
  convFilterGrad(x: number, n: number, H: number, W: number, Ci: number, CiUsed: number, dy: number, K: number, pad: number, Co: number, dw: number): void;
  biasGrad(dy: number, rows: number, C: number, db: number): void;
  maxPool2Forward(x: number, n: number, H: number, W: number, C: number, y: number, arg: number): void;
  maxPool2Backward(dy: number, count: number, arg: number, dx: number): void;
  reluForward(x: number, count: number): void;
  reluBackward(y: number, g: number, count: number): void;
  copyChannels(x: number, pixels: number, Cx: number, Cy: number, y: number): void;
  scaleChannels(x: number, n: number, pixels: number, C: number, mask: number): void;
  denseForward(x: number, n: number, In: number, xStride: number, w: number, b: number, Out: number, y: number): void;
  denseWeightGrad(x: number, n: number, In: number, xStride: number, dy: number, Out: number, dw: number): void;
  denseInputGrad(dy: number, n: number, Out: number, w: number, In: number, dxStride: number, dx: number): void;
  softmaxNll(z: number, n: number, classes: number, stride: number, labels: number, dz: number, total: number): number;
  logSoftmax(z: number, n: number, classes: number, stride: number): void;
  addInto(acc: number, g: number, n: number): void;
  allFinite(ptr: number, n: number): number;
  widenFloat16(src: number, dst: number, n: number): void;
  widenBfloat16(src: number, dst: number, n: number): void;
  sgdStep(w: number, g: number, v: number, n: number, lr: number, momentum: number, scale: number): void;
}

export interface SimdInstance {
  kernels: SimdKernels;
  memory: WebAssembly.Memory;
}

const WASM_URL = new URL('./kernels.wasm', import.meta.url);
const PAGE_BYTES = 65536;

let compiled: WebAssembly.Module | null | undefined;

/** Every export SimdKernels names: a kernels.wasm built from older sources lacks some. */
const KERNEL_NAMES: ReadonlyArray<keyof SimdKernels> = [
  'heapBase', 'convForward', 'convFilterGrad', 'biasGrad', 'maxPool2Forward', 'maxPool2Backward', 'reluForward', 'reluBackward',
  'copyChannels', 'scaleChannels', 'denseForward', 'denseWeightGrad', 'denseInputGrad', 'softmaxNll', 'logSoftmax',
  'addInto', 'allFinite', 'widenFloat16', 'widenBfloat16', 'sgdStep',
];

/**
 * The compiled module, or null where this Node cannot run WebAssembly SIMD, or the build lacks it or
 * is stale (a kernel missing): everything then runs on the JavaScript and tfjs paths, rather than
 * failing at the first call of a missing kernel.
 */
function compiledModule(): WebAssembly.Module | null {
  if (compiled === undefined) {
    try {
      const bytes = readFileSync(WASM_URL);
      const mod = WebAssembly.validate(bytes) ? new WebAssembly.Module(bytes) : null;
      const exported = new Set(mod ? WebAssembly.Module.exports(mod).map((e) => e.name) : []);
      compiled = mod && KERNEL_NAMES.every((name) => exported.has(name)) ? mod : null;
    } catch {
      compiled = null;
    }
  }
  return compiled;
}

export function simdAvailable(): boolean {
  return compiledModule() !== null;
}

/**
 * A fresh instance with `bytes` of memory (grown later with `growTo`), which may grow to
 * `maxBytes` (default: the 4 GiB a 32-bit memory can address).
 */
export function instantiateSimd(bytes: number, maxBytes?: number): SimdInstance {
  const mod = compiledModule();
  if (!mod) throw new Error(`the fused CPU kernels (${WASM_URL.pathname}) are missing or need WebAssembly SIMD; run npm run build`);
  const initial = Math.max(1, Math.ceil(bytes / PAGE_BYTES));
  const memory = new WebAssembly.Memory(maxBytes === undefined ? { initial } : { initial, maximum: Math.max(initial, Math.floor(maxBytes / PAGE_BYTES)) });
  const instance = new WebAssembly.Instance(mod, {
    env: {
      memory,
      abort: () => {
        throw new Error('fused CPU kernel aborted');
      },
    },
  });
  return { kernels: instance.exports as unknown as SimdKernels, memory };
}

/**
 * Grows `memory` to at least `bytes` (growing detaches earlier views of its buffer). Throws a
 * RangeError when the memory cannot grow that far (past its maximum, or 4 GiB).
 */
export function growTo(memory: WebAssembly.Memory, bytes: number): void {
  const missing = Math.ceil(bytes / PAGE_BYTES) - memory.buffer.byteLength / PAGE_BYTES;
  if (missing > 0) memory.grow(missing);
}
