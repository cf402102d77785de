/**
 * The webgpu engine against tfjs's cpu backend: every model's loss and gradients on a real MNIST
 * shard, with dropout active, at the shard sizes training uses. Runs on any Vulkan device,
 * Mesa's software lavapipe included (CI); see startWebGpuOrSkip for what happens without one.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { currentEngine } from '../src/engine/backend.js';
import { loadMnist, IMAGE_PIXELS } from '../src/data/mnist.js';
import { MODEL_NAMES, createModel, initialWeights, paramLayout } from '../src/models/index.js';
import { createGradientComputer, type ShardData } from '../src/training/gradients.js';
import { sampleKey } from '../src/training/schedule.js';
import { relativeError, startWebGpuOrSkip } from './helpers.js';

const data = loadMnist({ trainLimit: 64, testLimit: 1 });

function shard(n: number): ShardData {
  return {
    pixels: data.train.images.subarray(0, n * IMAGE_PIXELS),
    labels: data.train.labels.subarray(0, n),
    keys: Uint32Array.from({ length: n }, (_, i) => sampleKey(1, 1, i)),
  };
}


for (const name of MODEL_NAMES) {
  // 16: deterministic mode's shard; 32: one of two workers at batch 64.
  for (const n of name === 'strong' ? [16] : [16, 32]) {
    test(`${name}: loss and gradients on webgpu match the cpu backend (shard of ${n})`, async (t) => {
      if (!(await startWebGpuOrSkip(t))) return;
      assert.equal(currentEngine()?.name, 'webgpu');
      const model = createModel(name);
      const layout = paramLayout(model);
      // Trained-looking weights are not needed: the initial ones give every layer non-zero gradients.
      const weights = initialWeights(model, 7);
      const computer = createGradientComputer(model, { fused: false });

      const gpu = await computer.compute(weights, shard(n));
      const again = await computer.compute(weights, shard(n), new Float32Array(layout.total));
      await tf.setBackend('cpu');
      let cpu;
      try {
        cpu = await computer.compute(weights, shard(n), new Float32Array(layout.total));
      } finally {
        await tf.setBackend('webgpu');
      }

      assert.equal(gpu.count, n);
      assert.ok(Number.isFinite(gpu.lossSum) && gpu.lossSum > 0);
      assert.ok(Math.abs(gpu.lossSum - cpu.lossSum) <= 1e-5 * Math.abs(cpu.lossSum), `loss ${gpu.lossSum} vs cpu ${cpu.lossSum}`);
      layout.specs.forEach((spec, i) => {
        const end = layout.offsets[i] + spec.shape.reduce((a, b) => a * b, 1);
        const ours = gpu.gradSum.subarray(layout.offsets[i], end);
        const theirs = cpu.gradSum.subarray(layout.offsets[i], end);
        assert.ok(theirs.some((v) => v !== 0), `${spec.name}: the cpu gradient is all zero`);
        const err = relativeError(ours, theirs);
        assert.ok(err < 1e-4, `${spec.name}: relative error ${err.toExponential(2)} against the cpu backend`);
      });
      // The same inputs give the same bits: what deterministic mode builds on.
      assert.deepEqual(again.gradSum, gpu.gradSum);
      assert.equal(again.lossSum, gpu.lossSum);
    });
  }
}

test('a long shared dimension (split-K territory) still gives the same bits twice on webgpu', async (t) => {
  if (!(await startWebGpuOrSkip(t))) return;
  // [4 × 4096] · [4096 × 64]: tfjs would sum this with atomics in arbitrary order; the engine does not.
  const av = Float32Array.from({ length: 4 * 4096 }, (_, i) => Math.sin(i * 0.37));
  const bv = Float32Array.from({ length: 4096 * 64 }, (_, i) => Math.cos(i * 0.11));
  const product = async (): Promise<Float32Array> => {
    const [a, b] = [tf.tensor2d(av, [4, 4096]), tf.tensor2d(bv, [4096, 64])];
    const c = tf.matMul(a, b);
    try {
      return (await c.data()) as Float32Array;
    } finally {
      tf.dispose([a, b, c]);
    }
  };
  const first = await product();
  for (let i = 0; i < 6; i++) assert.deepEqual(await product(), first);
  await tf.setBackend('cpu');
  const cpu = await product();
  await tf.setBackend('webgpu');
  assert.ok(relativeError(first as Float32Array, cpu as Float32Array) < 1e-4);
});
