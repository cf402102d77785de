/**
 * Registers the project's kernels for tfjs's wasm backend (see each file for why it exists):
 *   - Conv2DBackpropFilter: missing from tfjs-backend-wasm 4.22 (tfjs issue 8474);
 *   - Conv2DBackpropInput: replaces the built-in (slow) one; falls back to it for cases it
 *     does not handle;
 *   - MaxPoolGrad: replaces the built-in (slow) one; same fallback;
 *   - BatchMatMul: transposes operands before the built-in one, which is slow with transposes.
 * Only takes effect while 'wasm' is the active tfjs backend; safe to call more than once.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { KernelConfig, KernelFunc } from '@tensorflow/tfjs-core';
import { conv2DBackpropFilterWasm } from './conv2d_backprop_filter.js';
import { makeConv2DBackpropInputWasm } from './conv2d_backprop_input.js';
import { makeMaxPoolGradWasm } from './max_pool_grad.js';
import { makeBatchMatMulWasm } from './batch_mat_mul.js';

export { conv2DBackpropFilterOptions, conv2DBackpropFilterWasm, im2colKM } from './conv2d_backprop_filter.js';
export { conv2DBackpropInputOptions, makeConv2DBackpropInputWasm, rotateSwapFilter } from './conv2d_backprop_input.js';
export { makeMaxPoolGradWasm, maxPoolGradInto } from './max_pool_grad.js';
export { makeBatchMatMulWasm } from './batch_mat_mul.js';

const BACKEND = 'wasm';
const OVERRIDDEN = [tf.Conv2DBackpropFilter, tf.Conv2DBackpropInput, tf.MaxPoolGrad, tf.BatchMatMul] as const;

interface Installed {
  /** What was registered before us for each kernel (undefined: nothing). */
  originals: Map<string, KernelConfig | undefined>;
  /** Our kernel functions, to recognise them in the registry. */
  ours: Map<string, KernelFunc>;
}

let installed: Installed | undefined;

function ourKernelIsRegistered(name: string): boolean {
  const cfg = tf.getKernel(name, BACKEND);
  return installed !== undefined && cfg !== undefined && cfg.kernelFunc === installed.ours.get(name);
}

/** True while this module's kernels are the ones registered for 'wasm'. */
export function fastWasmKernelsRegistered(): boolean {
  return installed !== undefined && OVERRIDDEN.every(ourKernelIsRegistered);
}

/**
 * Registers Conv2DBackpropFilter, Conv2DBackpropInput and MaxPoolGrad for the 'wasm' backend.
 * Does nothing unless 'wasm' is the active backend (call it after `tf.setBackend('wasm')` and
 * `tf.ready()`), or when they are already registered.
 */
export function registerFastWasmKernels(): void {
  if (tf.engine().backendName !== BACKEND || tf.findBackend(BACKEND) == null) return;
  if (fastWasmKernelsRegistered()) return;
  if (installed === undefined) {
    const originals = new Map<string, KernelConfig | undefined>();
    for (const name of OVERRIDDEN) originals.set(name, tf.getKernel(name, BACKEND));
    const orig = (name: string): KernelFunc | undefined => originals.get(name)?.kernelFunc;
    const ours = new Map<string, KernelFunc>([
      [tf.Conv2DBackpropFilter, conv2DBackpropFilterWasm as KernelFunc],
      [tf.Conv2DBackpropInput, makeConv2DBackpropInputWasm(orig(tf.Conv2DBackpropInput))],
      [tf.MaxPoolGrad, makeMaxPoolGradWasm(orig(tf.MaxPoolGrad))],
      [tf.BatchMatMul, makeBatchMatMulWasm(orig(tf.BatchMatMul)!)],
    ]);
    installed = { originals, ours };
  }
  for (const name of OVERRIDDEN) {
    if (ourKernelIsRegistered(name)) continue;
    const original = installed.originals.get(name);
    if (tf.getKernel(name, BACKEND) !== undefined) tf.unregisterKernel(name, BACKEND);
    const config: KernelConfig = { kernelName: name, backendName: BACKEND, kernelFunc: installed.ours.get(name)! };
    // Keep the original's setup/dispose so its C++ bindings (our fallback) are recreated if
    // the backend is ever re-initialised.
    if (original?.setupFunc) config.setupFunc = original.setupFunc;
    if (original?.disposeFunc) config.disposeFunc = original.disposeFunc;
    tf.registerKernel(config);
  }
}

/** Puts back the kernels that were registered before `registerFastWasmKernels` (tests, benchmarks). */
export function unregisterFastWasmKernels(): void {
  if (installed === undefined) return;
  for (const name of OVERRIDDEN) {
    if (!ourKernelIsRegistered(name)) continue;
    tf.unregisterKernel(name, BACKEND);
    const original = installed.originals.get(name);
    if (original !== undefined) tf.registerKernel(original);
  }
}
