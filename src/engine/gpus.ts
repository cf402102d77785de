/**
 * Which NVIDIA GPUs this process may use, and how a worker is pinned to one of them, without
 * loading CUDA or Vulkan.
 *
 * `--gpu I` means the I-th GPU this process sees: with CUDA_VISIBLE_DEVICES=4,5,6,7, `--gpu 1` is
 * physical GPU 5. CUDA engines are pinned through CUDA_VISIBLE_DEVICES; Vulkan (the webgpu engine)
 * ignores that variable, so it is pinned by PCI address through Mesa's device-select layer.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';

/** Where the NVIDIA kernel driver lists its GPUs, one folder per PCI address ("0000:1b:00.0"). */
const NVIDIA_PROC_GPUS = '/proc/driver/nvidia/gpus';
/** The Vulkan layer that lets an environment variable choose among identical devices. */
const MESA_DEVICE_SELECT_LAYER = ['/usr/share/vulkan/implicit_layer.d/VkLayer_MESA_device_select.json', '/etc/vulkan/implicit_layer.d/VkLayer_MESA_device_select.json'];

/** The GPUs the NVIDIA driver shows this process, in PCI order (nvidia-smi's order): [{ index, pci }]. */
export function nvidiaGpus(procDir = NVIDIA_PROC_GPUS): { index: number; pci: string }[] {
  let names: string[];
  try {
    names = readdirSync(procDir).filter((n) => /^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f]$/i.test(n));
  } catch {
    return [];
  }
  // "Device Minor" is the N of /dev/nvidiaN; the PCI order is the index nvidia-smi and CUDA_VISIBLE_DEVICES use.
  return names.sort().map((pci, index) => ({ index, pci }));
}

/**
 * The ids listed in CUDA_VISIBLE_DEVICES (indices or GPU-UUIDs), or undefined when it is unset.
 * An empty value or -1 hides every GPU.
 */
export function cudaVisibleIds(env: NodeJS.ProcessEnv = process.env): string[] | undefined {
  const visible = env.CUDA_VISIBLE_DEVICES;
  if (visible === undefined) return undefined;
  const ids: string[] = [];
  for (const raw of visible.split(',')) {
    const id = raw.trim();
    // CUDA stops at the first invalid entry.
    if (id === '' || id === '-1') break;
    ids.push(id);
  }
  return ids;
}

/**
 * How many NVIDIA GPUs this process may use: CUDA_VISIBLE_DEVICES when set; else the GPUs the
 * driver lists (a container sees only its own there); else the /dev/nvidiaN device files.
 */
export function visibleGpuCount(env: NodeJS.ProcessEnv = process.env, procDir = NVIDIA_PROC_GPUS): number {
  const ids = cudaVisibleIds(env);
  if (ids !== undefined) return ids.length;
  const listed = nvidiaGpus(procDir).length;
  if (listed > 0) return listed;
  let n = 0;
  while (existsSync(`/dev/nvidia${n}`)) n++;
  return n;
}

/**
 * CUDA_VISIBLE_DEVICES for a process pinned to the I-th visible GPU: the I-th entry of the
 * parent's list when it has one (so a subset stays a subset), else I itself.
 */
export function cudaDeviceFor(gpu: number, env: NodeJS.ProcessEnv = process.env): string {
  const ids = cudaVisibleIds(env);
  if (ids === undefined) return String(gpu);
  if (gpu >= ids.length) throw new RangeError(`--gpu ${gpu}: only ${ids.length} GPU${ids.length === 1 ? '' : 's'} visible (CUDA_VISIBLE_DEVICES=${env.CUDA_VISIBLE_DEVICES})`);
  return ids[gpu];
}

/** The PCI address of the I-th visible GPU, or undefined where the driver does not list it. */
export function pciAddressFor(gpu: number, env: NodeJS.ProcessEnv = process.env, procDir = NVIDIA_PROC_GPUS): string | undefined {
  const gpus = nvidiaGpus(procDir);
  if (gpus.length === 0) return undefined;
  const ids = cudaVisibleIds(env);
  let physical: number | undefined = gpu;
  if (ids !== undefined) {
    const id = ids[gpu];
    // UUIDs cannot be mapped to a PCI address without the driver's library.
    physical = id !== undefined && /^\d+$/.test(id) ? Number(id) : undefined;
  }
  return physical === undefined ? undefined : gpus[physical]?.pci;
}

export interface VulkanPin {
  /** Variables to set before the Vulkan loader starts. */
  env: Record<string, string>;
  /** What the log says about the choice. */
  note: string;
}

/**
 * Environment that makes Vulkan expose only the I-th visible GPU. WebGPU has no way to choose
 * among identical adapters, and Dawn's own `adapter=` option matches names, which identical GPUs
 * share; Mesa's device-select layer (an implicit Vulkan layer shipped with mesa-vulkan-drivers)
 * picks a device by PCI address (DRI_PRIME=pci-DDDD_BB_DD_F) and, forced, hides the others.
 * Where neither the layer nor the address is available, the first adapter is used: give each
 * worker a machine or container of its own GPU instead (on Kubernetes, nvidia.com/gpu: 1).
 */
export function vulkanPinFor(gpu: number, env: NodeJS.ProcessEnv = process.env, procDir = NVIDIA_PROC_GPUS, layerFiles = MESA_DEVICE_SELECT_LAYER): VulkanPin {
  const pci = pciAddressFor(gpu, env, procDir);
  if (pci === undefined) return { env: {}, note: `GPU ${gpu} requested, but the driver lists no PCI address for it; Vulkan's first device is used` };
  if (!layerFiles.some((f) => existsSync(f))) {
    return { env: {}, note: `GPU ${gpu} (PCI ${pci}) requested, but Mesa's Vulkan device-select layer is not installed; Vulkan's first device is used` };
  }
  const [domain, bus, rest] = pci.split(':');
  const [device, fn] = rest.split('.');
  return {
    env: { DRI_PRIME: `pci-${domain.padStart(4, '0').slice(-4)}_${bus}_${device}_${fn}`, MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE: '1' },
    note: `GPU ${gpu}: PCI ${pci}`,
  };
}

/** The model name of a GPU as the NVIDIA driver reports it (for logs), if it does. */
export function nvidiaGpuName(pci: string, procDir = NVIDIA_PROC_GPUS): string | undefined {
  try {
    return /^Model:\s*(.+)$/m.exec(readFileSync(`${procDir}/${pci}/information`, 'utf8'))?.[1]?.trim();
  } catch {
    return undefined;
  }
}
