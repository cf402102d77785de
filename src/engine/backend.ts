/**
 * Chooses and starts the tensor engine: the one place that knows which engines exist. With
 * `--engine auto` (the default) the order of preference is:
 *   1. tfjs-node-gpu: @tensorflow/tfjs-node-gpu installed, an NVIDIA GPU visible, no --no-cuda;
 *   2. webgpu: a hardware WebGPU adapter found through Dawn over Vulkan (engine/webgpu), no --no-cuda;
 *      probed only where the machine shows GPU hardware (an NVIDIA GPU, a /dev/dri render node);
 *      a software adapter (Mesa's lavapipe) is never chosen here;
 *   3. tfjs-node: @tensorflow/tfjs-node installed;
 *   4. wasm: tfjs's wasm backend (XNNPACK, SIMD, one thread) with the kernels it lacks registered
 *      here; the training step itself runs on the fused SIMD kernels of engine/simd (set
 *      MNIST_KERNELS=tfjs to run it on tfjs's kernels instead, for comparison).
 * A forced engine (`--engine NAME`) that cannot start is an error naming why; a forced webgpu
 * accepts a software adapter (that is how CI tests the engine).
 * Neither tfjs-node package is a dependency: they go into the tfjs-node-gpu image only, so they are
 * loaded by name at run time and their absence is the normal case.
 */
import * as tf from '@tensorflow/tfjs-core';
// tfjs-core's Node bundle registers no gradient functions; tfjs-layers' bundle registers all of
// them when imported (core's own register_all_gradients module cannot be loaded by Node's ESM).
import '@tensorflow/tfjs-layers';
import { readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { UserError } from '../util/errors.js';
import { runYielding } from '../util/yield.js';
import { cudaDeviceFor, nvidiaGpuName, pciAddressFor, visibleGpuCount, vulkanPinFor } from './gpus.js';
import { registerFastWasmKernels } from './kernels/index.js';
import { type FusedNetwork, type NetworkDescription, createFusedNetwork, fusedEngineAvailable } from './simd/step.js';
import { GPU_CHUNK, createGpuNetwork } from './webgpu/fused.js';
import { EngineUnavailable, type GpuAdapterDescription, adapterLabel, startWebGpu } from './webgpu/start.js';

export { visibleGpuCount } from './gpus.js';
export type { GpuAdapterDescription } from './webgpu/start.js';

import type { EngineChoice, EngineName } from './choices.js';
export { ENGINE_CHOICES, ENGINE_NAMES, type EngineChoice, type EngineName, isEngineChoice } from './choices.js';

export interface EngineInfo {
  /** The package that computes: what summary.json calls `backend`. */
  name: EngineName;
  /** Human-readable device, e.g. "cpu (wasm, simd, fused kernels, 1 thread)" or "gpu 0". */
  device: string;
  /** The GPU adapter (webgpu engine). */
  adapter?: GpuAdapterDescription;
  /** The training step runs on engine/simd's fused kernels rather than on tfjs's. */
  fusedKernels: boolean;
  /**
   * Values are read back from the engine asynchronously only (a GPU's buffers): callers use
   * tensor.data(), never dataSync().
   */
  asyncReadback: boolean;
}

export interface EngineOptions {
  /** --no-cuda: never use a GPU even where one is visible. */
  noCuda: boolean;
  /** --gpu I: the I-th visible GPU this process is pinned to. */
  gpu?: number;
  /** --engine: 'auto' (default) follows the order above. */
  engine?: EngineChoice;
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

let started: EngineInfo | undefined;
/** The webgpu engine's device, shared by tfjs and the fused GPU step. */
let gpuDevice: GPUDevice | undefined;

/** Starts the engine once per process; later calls return the engine already chosen. */
export async function initEngine(opts: EngineOptions): Promise<EngineInfo> {
  if (started) return started;
  const wanted = opts.engine ?? 'auto';
  if (opts.noCuda && (wanted === 'webgpu' || wanted === 'tfjs-node-gpu')) {
    throw new UserError(`--engine ${wanted} computes on a GPU, which --no-cuda forbids`);
  }
  const gpusVisible = opts.noCuda ? 0 : visibleGpuCount();
  // Worked out before CUDA_VISIBLE_DEVICES is narrowed below: --gpu counts the parent's GPUs.
  const vulkanPin = opts.gpu !== undefined ? describeVulkanPin(opts.gpu) : undefined;
  if (opts.gpu !== undefined && !opts.noCuda) {
    try {
      // Pins the CUDA engines; harmless for the others.
      process.env.CUDA_VISIBLE_DEVICES = cudaDeviceFor(opts.gpu);
    } catch (e) {
      throw new UserError((e as Error).message);
    }
  }

  if (wanted === 'tfjs-node-gpu' || (wanted === 'auto' && gpusVisible > 0 && isInstalled('@tensorflow/tfjs-node-gpu'))) {
    if (!isInstalled('@tensorflow/tfjs-node-gpu')) throw new UserError('--engine tfjs-node-gpu: the package @tensorflow/tfjs-node-gpu is not installed (it is in the tfjs-node-gpu image only)');
    return (started = await startTfjsNode('tfjs-node-gpu', `gpu ${opts.gpu ?? 0}`));
  }
  if (wanted === 'webgpu' || (wanted === 'auto' && !opts.noCuda && gpuHardwarePresent(gpusVisible))) {
    const started_ = await tryWebGpu(wanted === 'webgpu', vulkanPin);
    if (started_) return (started = started_);
  }
  if (wanted === 'tfjs-node' || (wanted === 'auto' && isInstalled('@tensorflow/tfjs-node'))) {
    if (!isInstalled('@tensorflow/tfjs-node')) throw new UserError('--engine tfjs-node: the package @tensorflow/tfjs-node is not installed');
    return (started = await startTfjsNode('tfjs-node', 'cpu (libtensorflow)'));
  }
  return (started = await startWasm());
}

/**
 * Whether this machine shows any GPU hardware: an NVIDIA GPU, or a kernel render node (AMD, Intel).
 * `auto` probes WebGPU only then: elsewhere the only adapter is a software one, which it would
 * refuse anyway, after Dawn's start-up and its warnings on stderr.
 */
function gpuHardwarePresent(nvidiaGpus: number): boolean {
  if (process.platform !== 'linux') return true;
  if (nvidiaGpus > 0) return true;
  try {
    return readdirSync('/dev/dri').some((f) => f.startsWith('renderD'));
  } catch {
    return false;
  }
}

/** The environment that pins Vulkan to the I-th visible GPU, and a note for the log. */
function describeVulkanPin(gpu: number): { env: Record<string, string>; note: string } {
  const pin = vulkanPinFor(gpu);
  const pci = pciAddressFor(gpu);
  const name = pci ? nvidiaGpuName(pci) : undefined;
  return { env: pin.env, note: name ? `${pin.note} (${name})` : pin.note };
}

/** The webgpu engine, or undefined where `auto` should move on (forced: an error instead). */
async function tryWebGpu(forced: boolean, pin: { env: Record<string, string>; note: string } | undefined): Promise<EngineInfo | undefined> {
  if (pin) Object.assign(process.env, pin.env);
  const pinNote = pin?.note;
  try {
    const { adapter, device: gpu } = await startWebGpu(forced);
    gpuDevice = gpu;
    const fusedKernels = process.env.MNIST_KERNELS !== 'tfjs';
    const device = `gpu ${adapterLabel(adapter)}${fusedKernels ? ', fused kernels' : ''}${pinNote ? `; ${pinNote}` : ''}`;
    return { name: 'webgpu', device, adapter, fusedKernels, asyncReadback: true };
  } catch (e) {
    if (!(e instanceof EngineUnavailable)) throw e;
    if (forced) throw new UserError(`--engine webgpu: ${e.message}`);
    return undefined;
  }
}

async function startTfjsNode(name: 'tfjs-node' | 'tfjs-node-gpu', device: string): Promise<EngineInfo> {
  // Importing tfjs-node registers its 'tensorflow' backend on the shared tfjs-core.
  await import(name === 'tfjs-node-gpu' ? '@tensorflow/tfjs-node-gpu' : ('@tensorflow/tfjs-node' as string));
  await tf.setBackend('tensorflow');
  await tf.ready();
  return { name, device, fusedKernels: false, asyncReadback: false };
}

async function startWasm(): Promise<EngineInfo> {
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  // One thread per process: parallelism comes from one worker process per core.
  wasm.setThreadsCount(1);
  await tf.setBackend('wasm');
  await tf.ready();
  registerFastWasmKernels();
  const simd = tf.env().getBool('WASM_HAS_SIMD_SUPPORT');
  const fusedKernels = process.env.MNIST_KERNELS !== 'tfjs' && fusedEngineAvailable();
  return { name: 'wasm', device: `cpu (wasm${simd ? ', simd' : ''}${fusedKernels ? ', fused kernels' : ''}, 1 thread)`, fusedKernels, asyncReadback: false };
}

/**
 * What decides an engine's bits: its name, and whether the training step runs on the fused kernels
 * or on the library's (`MNIST_KERNELS=tfjs`), which add in another order. Deterministic runs need
 * one identity across their workers.
 */
export function engineIdentity(engine: Pick<EngineInfo, 'name' | 'fusedKernels'>): string {
  return `${engine.name} (${engine.fusedKernels ? 'fused' : 'library'} kernels)`;
}

/** The engine this process started (undefined before initEngine). */
export function currentEngine(): EngineInfo | undefined {
  return started;
}

/**
 * A model's whole training step and forward pass on the started engine's own fused kernels: the
 * SIMD CPU kernels (wasm) or the WGSL compute shaders (webgpu). Undefined where the engine has
 * none, is told not to use them (MNIST_KERNELS=tfjs) or cannot serve the network: the caller then
 * runs the model on tfjs's ops.
 */
export interface EngineNetwork {
  /**
   * The fused CPU engine's trainStep (simd/step.ts), resolving to Σ NLL: Σ over the shard of ∂NLL/∂w
   * into `gradOut`. Only the CPU engine calls `onTailReady` as each tail of gradOut becomes final.
   */
  trainStep(...args: Parameters<FusedNetwork['trainStep']>): Promise<number>;
  /** Log-probabilities [n × classes] of normalised images x (dropout inactive). */
  forward(weights: Float32Array, x: Float32Array, n: number): Promise<Float32Array>;
  /** Images an evaluation passes through forward() at a time. */
  evalChunk: number;
  /** GPU programs a training step of n samples dispatches (GPU engines). */
  programsPerStep?(n: number): number;
}

/** `yielding: false`: the CPU engine computes a call in one piece (a short recomputation whose verdict must keep its place in line). */
export function createEngineNetwork(net: NetworkDescription, inputShape: readonly [number, number, number], { yielding = true } = {}): EngineNetwork | undefined {
  if (!started?.fusedKernels) return undefined;
  if (started.name === 'webgpu' && gpuDevice) {
    const gpu = createGpuNetwork(gpuDevice, net, inputShape);
    return (
      gpu && {
        trainStep: (w, x, labels, masks, gradOut) => gpu.trainStep(w, x, labels, masks, gradOut),
        forward: (w, x, n) => gpu.forward(w, x, n),
        evalChunk: GPU_CHUNK,
        programsPerStep: (n) => gpu.programsPerStep(n),
      }
    );
  }
  const cpu = createFusedNetwork(net, inputShape);
  if (!cpu) return undefined;
  // The CPU kernels run on this thread: a long step lets the event loop in between its chunks, one
  // call at a time (the network's buffers are its own).
  let queue: Promise<unknown> = Promise.resolve();
  const exclusive = <T>(f: () => Promise<T>): Promise<T> => {
    const next = queue.then(f, f);
    queue = next.catch(() => {});
    return next;
  };
  if (!yielding) return { trainStep: async (...args) => cpu.trainStep(...args), forward: async (w, x, n) => cpu.forward(w, x, n), evalChunk: 128 };
  return {
    trainStep: (...args) => exclusive(() => runYielding(cpu.trainStepInChunks(...args))),
    forward: (w, x, n) => exclusive(() => runYielding(cpu.forwardInChunks(w, x, n))),
    // A chunk of the CPU engine stays in a core's cache.
    evalChunk: 128,
  };
}
