/**
 * Chooses and starts the tensor engine. Order of preference:
 *   1. @tensorflow/tfjs-node-gpu, when installed, a GPU is visible and --no-cuda is absent;
 *   2. @tensorflow/tfjs-node, when installed;
 *   3. tfjs's wasm backend (XNNPACK, SIMD, one thread) with the kernels it lacks registered here;
 *      the training step itself runs on the fused SIMD kernels of engine/simd (set
 *      MNIST_KERNELS=tfjs to run it on tfjs's kernels instead, for comparison).
 * Neither tfjs-node package is a dependency: they go into the GPU image only, so they are loaded
 * by name at run time and their absence is the normal case on a CPU machine.
 */
import * as tf from '@tensorflow/tfjs-core';
// tfjs-core's Node bundle registers no gradient functions; tfjs-layers' bundle registers all of
// them when imported (core's own register_all_gradients module cannot be loaded by Node's ESM).
import '@tensorflow/tfjs-layers';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { registerFastWasmKernels } from './kernels/index.js';
import { fusedEngineAvailable } from './simd/step.js';

export type EngineName = 'tfjs-node-gpu' | 'tfjs-node' | 'wasm';

export interface EngineInfo {
  /** The package that computes: what summary.json calls `backend`. */
  name: EngineName;
  /** Human-readable device, e.g. "cpu (wasm, simd, fused kernels, 1 thread)" or "gpu 0". */
  device: string;
  /** The training step runs on engine/simd's fused kernels rather than on tfjs's. */
  fusedKernels: boolean;
}

export interface EngineOptions {
  /** --no-cuda: never use the GPU even where one is visible. */
  noCuda: boolean;
  /** --gpu I: the GPU this process is pinned to (sets CUDA_VISIBLE_DEVICES before loading). */
  gpu?: number;
  /** Force a backend (tests and benchmarks); by default the order above decides. */
  force?: EngineName;
}

const require = createRequire(import.meta.url);

function isInstalled(pkg: string): boolean {
  try {
    require.resolve(`${pkg}/package.json`);
    return true;
  } catch {
    return false;
  }
}

/** How many NVIDIA GPUs this process may use, without loading CUDA. */
export function visibleGpuCount(): number {
  const visible = process.env.CUDA_VISIBLE_DEVICES;
  if (visible !== undefined) {
    const ids = visible.split(',').map((s) => s.trim()).filter((s) => s !== '' && s !== '-1');
    return ids.length;
  }
  let n = 0;
  while (existsSync(`/dev/nvidia${n}`)) n++;
  return n;
}

let started: EngineInfo | undefined;

/** Starts the engine once per process; later calls return the engine already chosen. */
export async function initEngine(opts: EngineOptions): Promise<EngineInfo> {
  if (started) return started;
  if (opts.gpu !== undefined) process.env.CUDA_VISIBLE_DEVICES = String(opts.gpu);
  const wantGpu = !opts.noCuda && visibleGpuCount() > 0;
  const choice: EngineName =
    opts.force ??
    (wantGpu && isInstalled('@tensorflow/tfjs-node-gpu')
      ? 'tfjs-node-gpu'
      : isInstalled('@tensorflow/tfjs-node')
        ? 'tfjs-node'
        : 'wasm');
  if (choice === 'wasm') {
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    // One thread per process: parallelism comes from one worker process per core.
    wasm.setThreadsCount(1);
    await tf.setBackend('wasm');
    await tf.ready();
    registerFastWasmKernels();
    const simd = tf.env().getBool('WASM_HAS_SIMD_SUPPORT');
    const fusedKernels = process.env.MNIST_KERNELS !== 'tfjs' && fusedEngineAvailable();
    started = { name: 'wasm', device: `cpu (wasm${simd ? ', simd' : ''}${fusedKernels ? ', fused kernels' : ''}, 1 thread)`, fusedKernels };
  } else {
    // Importing tfjs-node registers its 'tensorflow' backend on the shared tfjs-core.
    await import(choice === 'tfjs-node-gpu' ? '@tensorflow/tfjs-node-gpu' : '@tensorflow/tfjs-node' as string);
    await tf.setBackend('tensorflow');
    await tf.ready();
    started = {
      name: choice,
      device: choice === 'tfjs-node-gpu' ? `gpu ${opts.gpu ?? 0}` : 'cpu (libtensorflow)',
      fusedKernels: false,
    };
  }
  return started;
}

/** Whether the engine this process started runs training steps on the fused SIMD kernels. */
export function fusedKernelsEnabled(): boolean {
  return started?.fusedKernels ?? false;
}
