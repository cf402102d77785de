/** GPU pinning without a GPU: CUDA_VISIBLE_DEVICES subsets, the driver's listing, Vulkan's device choice. */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { cudaDeviceFor, cudaVisibleIds, nvidiaGpus, pciAddressFor, visibleGpuCount, vulkanPinFor } from '../src/engine/gpus.js';
import { adapterLabel, vulkanDriverListed, vulkanLoaderPresent } from '../src/engine/webgpu/start.js';
import { tempDir } from './helpers.js';

/** A fake /proc/driver/nvidia/gpus with these PCI addresses (listed out of order). */
function procGpus(...pcis: string[]): string {
  const dir = tempDir('nvidia-gpus-');
  for (const pci of pcis) {
    mkdirSync(join(dir, pci));
    writeFileSync(join(dir, pci, 'information'), `Model: \t\t NVIDIA H200\nIRQ: 1\n`);
  }
  return dir;
}

test('CUDA_VISIBLE_DEVICES: a subset stays a subset for a pinned worker', () => {
  const env = { CUDA_VISIBLE_DEVICES: '4,5,6,7' };
  assert.deepEqual(cudaVisibleIds(env), ['4', '5', '6', '7']);
  assert.equal(visibleGpuCount(env), 4);
  assert.equal(cudaDeviceFor(1, env), '5');
  assert.equal(cudaDeviceFor(3, env), '7');
  assert.throws(() => cudaDeviceFor(4, env), /--gpu 4: only 4 GPUs visible/);
  assert.equal(cudaDeviceFor(2, {}), '2');
  // UUIDs pass through; CUDA stops at the first invalid entry; -1 or empty hides all.
  assert.equal(cudaDeviceFor(0, { CUDA_VISIBLE_DEVICES: 'GPU-8e1c,GPU-77aa' }), 'GPU-8e1c');
  assert.equal(visibleGpuCount({ CUDA_VISIBLE_DEVICES: '0,-1,1' }), 1);
  assert.equal(visibleGpuCount({ CUDA_VISIBLE_DEVICES: '' }), 0);
});

test("the driver's listing counts a container's GPUs and orders them by PCI address", () => {
  const dir = procGpus('0000:9a:00.0', '0000:1b:00.0', '0000:3c:00.0');
  assert.deepEqual(nvidiaGpus(dir).map((g) => g.pci), ['0000:1b:00.0', '0000:3c:00.0', '0000:9a:00.0']);
  assert.equal(visibleGpuCount({}, dir), 3);
  assert.equal(visibleGpuCount({}, join(dir, 'absent')), 0);
  assert.equal(pciAddressFor(1, {}, dir), '0000:3c:00.0');
  assert.equal(pciAddressFor(0, { CUDA_VISIBLE_DEVICES: '2,1' }, dir), '0000:9a:00.0');
  assert.equal(pciAddressFor(0, { CUDA_VISIBLE_DEVICES: 'GPU-8e1c' }, dir), undefined);
});

test("Vulkan is pinned by PCI address through Mesa's device-select layer, and says so when it cannot be", () => {
  const dir = procGpus('0000:1b:00.0', '0000:3c:00.0');
  const layer = join(tempDir(), 'VkLayer_MESA_device_select.json');
  writeFileSync(layer, '{}');
  const pin = vulkanPinFor(1, {}, dir, [layer]);
  assert.deepEqual(vulkanPinFor(0, { CUDA_VISIBLE_DEVICES: '1' }, dir, [layer]).env.DRI_PRIME, 'pci-0000_3c_00_0');
  assert.deepEqual(pin.env, { DRI_PRIME: 'pci-0000_3c_00_0', MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE: '1' });
  assert.match(pin.note, /GPU 1: PCI 0000:3c:00.0/);
  const noLayer = vulkanPinFor(0, {}, dir, [join(dir, 'absent.json')]);
  assert.deepEqual(noLayer.env, {});
  assert.match(noLayer.note, /device-select layer is not installed; Vulkan's first device is used/);
  assert.deepEqual(vulkanPinFor(0, {}, join(dir, 'absent'), [layer]).env, {});
});

test('the Vulkan loader and drivers are looked for where the loader looks', () => {
  if (process.platform !== 'linux') return;
  const lib = tempDir('vk-lib-');
  assert.equal(vulkanLoaderPresent({ LD_LIBRARY_PATH: lib }, []), false);
  writeFileSync(join(lib, 'libvulkan.so.1'), '');
  assert.equal(vulkanLoaderPresent({ LD_LIBRARY_PATH: lib }, []), true);
  const icd = tempDir('vk-icd-');
  assert.equal(vulkanDriverListed({}, [icd]), false);
  writeFileSync(join(icd, 'nvidia_icd.json'), '{}');
  assert.equal(vulkanDriverListed({}, [icd]), true);
  assert.equal(vulkanDriverListed({ VK_DRIVER_FILES: '/nonexistent/icd.json' }, [icd]), false);
  assert.equal(vulkanDriverListed({ VK_ICD_FILENAMES: join(icd, 'nvidia_icd.json') }, []), true);
});

test('adapter labels name the GPU and mark a software adapter', () => {
  assert.equal(
    adapterLabel({ vendor: 'mesa', architecture: 'software', device: 'llvmpipe', description: 'llvmpipe: Mesa 25.0.7 (LLVM 15.0.6)', software: true }),
    'llvmpipe: Mesa 25.0.7 (LLVM 15.0.6) (software)',
  );
  assert.equal(adapterLabel({ vendor: 'nvidia', architecture: 'hopper', device: '', description: 'NVIDIA H200', software: false }), 'NVIDIA H200 (hopper)');
});
