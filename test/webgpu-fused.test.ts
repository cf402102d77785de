/**
 * The fused GPU step (engine/webgpu/fused.ts: the model's whole step as WGSL compute shaders)
 * against the fused CPU engine and against central differences of its own loss, for every model, at
 * the shard sizes training uses and across its chunk boundary; and its evaluation pass. Runs on any
 * Vulkan device, Mesa's lavapipe included (CI).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { createEngineNetwork, currentEngine } from '../src/engine/backend.js';
import { GPU_CHUNK } from '../src/engine/webgpu/fused.js';
import { createFusedNetwork } from '../src/engine/simd/step.js';
import { IMAGE_PIXELS, loadMnist, normalisePixels } from '../src/data/mnist.js';
import { MODEL_NAMES, createModel, initialWeights, paramLayout, type ModelName } from '../src/models/index.js';
import { createGradientComputer, type ShardData } from '../src/training/gradients.js';
import { dropoutMasks } from '../src/training/dropout.js';
import { evaluate } from '../src/training/evaluate.js';
import { sampleKey } from '../src/training/schedule.js';
import { relativeError, startWebGpuOrSkip } from './helpers.js';

const data = loadMnist({ trainLimit: GPU_CHUNK + 8, testLimit: 300 });

function shard(n: number): ShardData {
  return {
    pixels: data.train.images.subarray(0, n * IMAGE_PIXELS),
    labels: data.train.labels.subarray(0, n),
    keys: Uint32Array.from({ length: n }, (_, i) => sampleKey(3, 1, i)),
  };
}


/**
 * The gradient on the started engine's fused GPU step, twice, and on the fused CPU engine
 * (engine/simd), itself tested against central differences on every shape. (tfjs's cpu backend
 * is not the reference here: for `strong`, whose relu comes before its max-pool, its gradient of
 * conv1 differs from central differences of its own loss by 10% on some shards; the GPU step and
 * tfjs's WebGPU backend agree with the differences.)
 */
async function fusedAndCpu(name: ModelName, n: number) {
  const model = createModel(name);
  const layout = paramLayout(model);
  const weights = initialWeights(model, 5);
  const fused = await createGradientComputer(model).compute(weights, shard(n), new Float32Array(layout.total));
  const again = await createGradientComputer(model).compute(weights, shard(n), new Float32Array(layout.total));
  const simd = createFusedNetwork(model, [28, 28, 1]);
  assert.ok(simd, 'the fused CPU engine serves the model');
  const s = shard(n);
  const gradSum = new Float32Array(layout.total);
  const lossSum = simd.trainStep(weights, normalisePixels(s.pixels), s.labels, dropoutMasks(model.dropouts, s.keys), gradSum);
  return { model, layout, fused, again, cpu: { gradSum, lossSum } };
}

const cases: Array<[ModelName, number]> = [
  ...MODEL_NAMES.filter((m) => m !== 'strong').flatMap((m): Array<[ModelName, number]> => [[m, 16], [m, 32]]),
  ['strong', 16],
  // More than one chunk: the weight gradients of the chunks add up in order.
  ['net', GPU_CHUNK + 8],
];

for (const [name, n] of cases) {
  test(`${name}: the fused GPU step matches the fused CPU engine (shard of ${n})`, async (t) => {
    if (!(await startWebGpuOrSkip(t))) return;
    assert.ok(currentEngine()?.fusedKernels, 'the webgpu engine runs its fused step by default');
    assert.ok(createEngineNetwork(createModel(name), [28, 28, 1]), `the fused step serves ${name}`);
    const { layout, fused, again, cpu } = await fusedAndCpu(name, n);
    assert.equal(fused.count, n);
    assert.ok(Math.abs(fused.lossSum - cpu.lossSum) <= 1e-5 * cpu.lossSum, `loss ${fused.lossSum} vs CPU engine ${cpu.lossSum}`);
    layout.specs.forEach((spec, i) => {
      const end = layout.offsets[i] + spec.shape.reduce((a, b) => a * b, 1);
      const theirs = cpu.gradSum.subarray(layout.offsets[i], end);
      assert.ok(theirs.some((v) => v !== 0), `${spec.name}: the reference gradient is all zero`);
      const err = relativeError(fused.gradSum.subarray(layout.offsets[i], end), theirs);
      assert.ok(err < 1e-4, `${spec.name}: relative error ${err.toExponential(2)} against the CPU engine`);
    });
    assert.deepEqual(again.gradSum, fused.gradSum, 'the same bits on a second run');
    assert.equal(again.lossSum, fused.lossSum);
  });
}

test("net: the fused GPU step's gradient matches central differences of its own loss", async (t) => {
  if (!(await startWebGpuOrSkip(t))) return;
  const model = createModel('net');
  const layout = paramLayout(model);
  const net = createEngineNetwork(model, [28, 28, 1]);
  assert.ok(net);
  const n = 16;
  const s = shard(n);
  const x = normalisePixels(s.pixels);
  const masks = dropoutMasks(model.dropouts, s.keys);
  const weights = initialWeights(model, 9);
  const grad = new Float32Array(layout.total);
  await net.trainStep(weights, x, s.labels, masks, grad);
  const scratch = new Float32Array(layout.total);
  // Small enough that no max-pool window changes its winner, large enough for float32 losses.
  const eps = 1e-3;
  for (const [i, spec] of layout.specs.entries()) {
    // Each parameter's coordinate of largest gradient: the best-conditioned difference.
    const size = spec.shape.reduce((a, b) => a * b, 1);
    let j = layout.offsets[i];
    for (let k = layout.offsets[i]; k < layout.offsets[i] + size; k++) if (Math.abs(grad[k]) > Math.abs(grad[j])) j = k;
    const w = Float32Array.from(weights);
    w[j] = weights[j] + eps;
    const up = await net.trainStep(w, x, s.labels, masks, scratch);
    w[j] = weights[j] - eps;
    const down = await net.trainStep(w, x, s.labels, masks, scratch);
    const numeric = (up - down) / (2 * eps);
    assert.ok(Math.abs(numeric - grad[j]) <= 0.02 * Math.abs(grad[j]) + 5e-3, `${spec.name}[${j - layout.offsets[i]}]: analytic ${grad[j]}, numeric ${numeric}`);
  }
});

test('the fused GPU evaluation gives the cpu backend\'s predictions and loss', async (t) => {
  if (!(await startWebGpuOrSkip(t))) return;
  const model = createModel('net');
  const weights = initialWeights(model, 2);
  const net = createEngineNetwork(model, [28, 28, 1]);
  assert.ok(net);
  const x = normalisePixels(data.test.images);
  const logp = await net.forward(weights, x, data.test.count);
  await tf.setBackend('cpu');
  let cpu;
  try {
    cpu = await evaluate(model, weights, data.test, 100);
  } finally {
    await tf.setBackend('webgpu');
  }
  let loss = 0;
  for (let i = 0; i < data.test.count; i++) {
    const row = logp.subarray(i * 10, (i + 1) * 10);
    loss -= row[data.test.labels[i]];
    let best = 0;
    for (let c = 1; c < 10; c++) if (row[c] > row[best]) best = c;
    assert.equal(best, cpu.predictions[i], `sample ${i}`);
  }
  assert.ok(Math.abs(loss / data.test.count - cpu.loss) < 1e-5 * cpu.loss);
});
