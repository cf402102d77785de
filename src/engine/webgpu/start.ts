/**
 * The webgpu engine: tfjs's WebGPU backend on Dawn, Chromium's WebGPU implementation, through its
 * Node binding (the npm package `webgpu`, whose prebuilt binary ships inside the package) over
 * Vulkan. It runs on any GPU with a Vulkan driver (NVIDIA's needs no CUDA toolkit), and on Mesa's
 * software Vulkan device (lavapipe), which is how CI tests it.
 *
 * Start-up fails with a one-line reason (EngineUnavailable) when the Vulkan loader, the packages or
 * an adapter are missing, or when only a software adapter exists and software was not accepted.
 */
import * as tf from '@tensorflow/tfjs-core';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { delimiter } from 'node:path';

/** The GPU adapter an engine computes on, as summary.json reports it. */
export interface GpuAdapterDescription {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** A CPU implementation of the GPU API (lavapipe, SwiftShader): correct, not fast. */
  software: boolean;
}

/** The engine cannot start here; the message says why, in one line. */
export class EngineUnavailable extends Error {}

const require = createRequire(import.meta.url);

/** Folders where the dynamic linker finds libvulkan.so.1 on the Linux distributions we ship for. */
const LIBRARY_DIRS = ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/lib/x86_64-linux-gnu', '/lib64', '/usr/local/lib', '/usr/local/nvidia/lib64'];

/** Whether the Vulkan loader can be found (Linux); elsewhere Dawn uses the platform's own API. */
export function vulkanLoaderPresent(env: NodeJS.ProcessEnv = process.env, libraryDirs = LIBRARY_DIRS): boolean {
  if (process.platform !== 'linux') return true;
  const dirs = [...(env.LD_LIBRARY_PATH ?? '').split(delimiter).filter(Boolean), ...libraryDirs];
  return dirs.some((d) => existsSync(`${d}/libvulkan.so.1`));
}

function describe(info: GPUAdapterInfo): GpuAdapterDescription {
  const text = `${info.vendor} ${info.architecture} ${info.device} ${info.description}`;
  // Dawn reports lavapipe with isFallbackAdapter and the architecture "software".
  const fallback = (info as GPUAdapterInfo & { isFallbackAdapter?: boolean }).isFallbackAdapter === true;
  const software = fallback || info.architecture === 'software' || /llvmpipe|lavapipe|swiftshader/i.test(text);
  return { vendor: info.vendor, architecture: info.architecture, device: info.device, description: info.description, software };
}

/** One line for logs: "NVIDIA H200 (nvidia, hopper)" or "llvmpipe: Mesa 25.0.7 … (software)". */
export function adapterLabel(a: GpuAdapterDescription): string {
  const name = a.description || a.device || a.vendor || 'unknown adapter';
  const detail = [a.vendor, a.architecture].filter((s) => s && !name.toLowerCase().includes(s.toLowerCase()));
  if (a.software && !detail.includes('software')) detail.push('software');
  return `${name}${detail.length ? ` (${detail.join(', ')})` : ''}`;
}

/** Where the Vulkan loader looks for drivers' manifests (ICD files) when no variable names them. */
function icdDirs(env: NodeJS.ProcessEnv): string[] {
  const data = (env.XDG_DATA_DIRS ?? '/usr/local/share:/usr/share').split(delimiter).filter(Boolean);
  return ['/etc/vulkan/icd.d', '/usr/local/etc/vulkan/icd.d', ...data.map((d) => `${d}/vulkan/icd.d`), `${env.HOME ?? '/root'}/.local/share/vulkan/icd.d`];
}

/**
 * Whether any Vulkan driver is installed, judged as the loader does (Linux): the manifests that
 * VK_DRIVER_FILES / VK_ICD_FILENAMES name, else *.json in the loader's folders. Checked before
 * Dawn starts, whose own complaints about a driverless loader run to several lines.
 */
export function vulkanDriverListed(env: NodeJS.ProcessEnv = process.env, dirs = icdDirs(env)): boolean {
  if (process.platform !== 'linux') return true;
  const named = env.VK_DRIVER_FILES ?? env.VK_ICD_FILENAMES;
  if (named) return named.split(delimiter).some((f) => existsSync(f));
  if ((env.VK_ADD_DRIVER_FILES ?? '').split(delimiter).some((f) => f && existsSync(f))) return true;
  return dirs.some((d) => {
    try {
      return readdirSync(d).some((f) => f.endsWith('.json'));
    } catch {
      return false;
    }
  });
}

export interface WebGpuStart {
  adapter: GpuAdapterDescription;
  /** The device tfjs computes on; the fused GPU step shares it. */
  device: GPUDevice;
}

/**
 * Finds a WebGPU adapter through Dawn and makes tfjs's `webgpu` backend compute on it.
 * `acceptSoftware`: take a software adapter (forced `--engine webgpu`); `auto` never does.
 */
export async function startWebGpu(acceptSoftware: boolean): Promise<WebGpuStart> {
  if (!vulkanLoaderPresent()) {
    throw new EngineUnavailable('no Vulkan loader (libvulkan.so.1) on this machine; install it (Debian/Ubuntu: apt-get install libvulkan1) and a Vulkan driver');
  }
  if (!vulkanDriverListed()) {
    throw new EngineUnavailable('no Vulkan driver on this machine (no ICD manifest found; NVIDIA containers need NVIDIA_DRIVER_CAPABILITIES to include graphics)');
  }
  for (const pkg of ['webgpu', '@tensorflow/tfjs-backend-webgpu']) {
    try {
      require.resolve(`${pkg}/package.json`);
    } catch {
      throw new EngineUnavailable(`the package ${pkg} is not installed (npm ci installs it)`);
    }
  }
  // Importing the backend registers its kernels; it registers no backend while navigator.gpu is
  // absent, so the one registered below computes on the adapter chosen here.
  await import('@tensorflow/tfjs-backend-webgpu');
  let dawn: { create: (flags: string[]) => GPU; globals: Record<string, unknown> };
  try {
    dawn = (await import('webgpu')) as unknown as typeof dawn;
  } catch (e) {
    // e.g. a C++ runtime older than Dawn's binary needs (GLIBCXX_3.4.30: Ubuntu 20.04's is older).
    throw new EngineUnavailable(`Dawn's binary cannot be loaded here: ${(e as Error).message.split('\n')[0]}`);
  }
  const { create, globals } = dawn;
  Object.assign(globalThis, globals);
  const gpu = create(process.platform === 'linux' ? ['backend=vulkan'] : []);

  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  } catch (e) {
    // Dawn throws "no suitable backends found" when Vulkan has no device at all.
    adapter = null;
    if (!/no suitable|no supported adapters/i.test((e as Error).message)) throw new EngineUnavailable(`Dawn could not start: ${(e as Error).message.split('\n')[0]}`);
  }
  if (!adapter) throw new EngineUnavailable('no WebGPU adapter: Vulkan found no device (is a Vulkan driver installed? NVIDIA containers need NVIDIA_DRIVER_CAPABILITIES to include graphics)');
  const described = describe(adapter.info);
  if (described.software && !acceptSoftware) {
    throw new EngineUnavailable(`only a software adapter was found (${adapterLabel(described)}); force it with --engine webgpu`);
  }

  // The device asks for what tfjs's own start-up asks for: the adapter's limits and, where
  // offered, timestamp queries (its profiler's kernel times).
  const limits = adapter.limits;
  const device = await adapter.requestDevice({
    requiredFeatures: adapter.features.has('timestamp-query') ? ['timestamp-query'] : [],
    requiredLimits: {
      maxComputeWorkgroupStorageSize: limits.maxComputeWorkgroupStorageSize,
      maxComputeWorkgroupsPerDimension: limits.maxComputeWorkgroupsPerDimension,
      maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
      maxBufferSize: limits.maxBufferSize,
      maxComputeWorkgroupSizeX: limits.maxComputeWorkgroupSizeX,
      maxComputeInvocationsPerWorkgroup: limits.maxComputeInvocationsPerWorkgroup,
    },
  });
  // tfjs's backend checks navigator.gpu when it is constructed (Node 20 has no navigator).
  const nav = ((globalThis as { navigator?: object }).navigator ??= {}) as { gpu?: GPU };
  Object.defineProperty(nav, 'gpu', { value: gpu, configurable: true, writable: true });

  const { WebGPUBackend } = await import('@tensorflow/tfjs-backend-webgpu');
  tf.registerBackend('webgpu', () => new WebGPUBackend(device, adapter.info));
  if (!(await tf.setBackend('webgpu'))) throw new EngineUnavailable('tfjs could not start its webgpu backend on this adapter');
  await tf.ready();
  makeMatMulDeterministic();
  return { adapter: described, device };
}

/**
 * tfjs's WebGPU matmul splits a long shared dimension across workgroups that add their partial
 * sums with atomics (its "split-K" program: batch 1, shared dimension ≥ 2000, few output tiles),
 * in whatever order they finish: the same inputs then give different bits from run to run. Such a
 * product runs on the tiled program instead, which sums in a fixed order; every other choice is
 * tfjs's own. (net's and lenet's products never qualify; a single large shard of `strong` can.)
 */
function makeMatMulDeterministic(): void {
  const MATMUL_PACKED_PROGRAM = 3; // tfjs-backend-webgpu's MatMulProgramType.MatMulPackedProgram
  const SPLIT_K_MIN_SHARED_DIM = 2000;
  for (const name of ['BatchMatMul', '_FusedMatMul']) {
    const original = tf.getKernel(name, 'webgpu');
    if (!original) continue;
    tf.unregisterKernel(name, 'webgpu');
    tf.registerKernel({
      ...original,
      kernelFunc: (args) => {
        const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
        const { transposeA } = args.attrs as { transposeA: boolean };
        const shared = transposeA ? a.shape[a.shape.length - 2] : a.shape[a.shape.length - 1];
        const batch = Math.max(a.shape.slice(0, -2).reduce((x, y) => x * y, 1), b.shape.slice(0, -2).reduce((x, y) => x * y, 1));
        if (batch !== 1 || shared < SPLIT_K_MIN_SHARED_DIM || tf.env().getNumber('WEBGPU_MATMUL_PROGRAM_TYPE') >= 0) return original.kernelFunc(args);
        tf.env().set('WEBGPU_MATMUL_PROGRAM_TYPE', MATMUL_PACKED_PROGRAM);
        try {
          return original.kernelFunc(args);
        } finally {
          tf.env().set('WEBGPU_MATMUL_PROGRAM_TYPE', -1);
        }
      },
    });
  }
}
