/**
 * Where a training step's time goes on the webgpu engine: one shard's forward and backward pass
 * (the worker's whole job) timed wall-clock, and the number of GPU programs it dispatches. On tfjs's
 * ops (MNIST_KERNELS=tfjs) it also gives the GPU's own time for its kernels (timestamp queries,
 * where the adapter has them): where the wall time far exceeds it, dispatch and synchronisation,
 * not arithmetic, dominate. The default is the engine's fused step (engine/webgpu/fused.ts).
 *
 *   node dist/bench/webgpu-step.js [--model net] [--batch 64] [--steps 30] [--engine webgpu]
 */
import * as tf from '@tensorflow/tfjs-core';
import { parseArgs } from 'node:util';
import { IMAGE_PIXELS, loadMnist } from '../src/data/mnist.js';
import { createEngineNetwork, initEngine } from '../src/engine/backend.js';
import { createModel, initialWeights, isModelName, paramLayout } from '../src/models/index.js';
import { createGradientComputer } from '../src/training/gradients.js';
import { sampleKey } from '../src/training/schedule.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'net' },
    batch: { type: 'string', default: '64' },
    steps: { type: 'string', default: '30' },
    engine: { type: 'string', default: 'webgpu' },
    json: { type: 'boolean', default: false },
  },
});
const modelName = values.model ?? 'net';
if (!isModelName(modelName)) throw new Error(`unknown model ${modelName}`);
const n = Number(values.batch);
const steps = Number(values.steps);

const engine = await initEngine({ noCuda: false, engine: values.engine as 'webgpu' });
const model = createModel(modelName);
const data = loadMnist({ trainLimit: n, testLimit: 1 });
const shard = {
  pixels: data.train.images.subarray(0, n * IMAGE_PIXELS),
  labels: data.train.labels.subarray(0, n),
  keys: Uint32Array.from({ length: n }, (_, i) => sampleKey(1, 1, i)),
};
const weights = initialWeights(model, 1);
const out = new Float32Array(paramLayout(model).total);
const computer = createGradientComputer(model);

const t0 = performance.now();
await computer.compute(weights, shard, out);
const firstMs = performance.now() - t0;

// Programs dispatched by one step (tfjs's profiler lists every kernel it runs).
const profile = await tf.profile(async () => {
  await computer.compute(weights, shard, out);
});
// The fused step dispatches its own programs, which tfjs's profiler does not see.
const kernels = createEngineNetwork(model, [28, 28, 1])?.programsPerStep?.(n) ?? profile.kernels.length;

const wall: number[] = [];
const gpuKernel: number[] = [];
for (let i = 0; i < steps; i++) {
  const s = performance.now();
  // tf.time times the kernels the step enqueues (its function is synchronous); the step's own
  // read-back then ends it.
  let pending: Promise<unknown> | undefined;
  const timing = await tf.time(() => {
    pending = computer.compute(weights, shard, out);
  });
  await pending;
  wall.push(performance.now() - s);
  if (typeof timing.kernelMs === 'number') gpuKernel.push(timing.kernelMs);
}
// Plain steps, not under the timer: what a worker does.
const plain: number[] = [];
for (let i = 0; i < steps; i++) {
  const s = performance.now();
  await computer.compute(weights, shard, out);
  plain.push(performance.now() - s);
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const p90 = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.9)];
const result = {
  engine: engine.name,
  device: engine.device,
  model: modelName,
  batch: n,
  first_step_ms: firstMs,
  step_ms_median: median(plain),
  step_ms_p90: p90(plain),
  samples_per_s: (n * 1000) / median(plain),
  kernels_per_step: kernels,
  // tfjs's timer sees only its own kernels: on the fused step it has none to time.
  gpu_kernel_ms_median: gpuKernel.length && profile.kernels.length > 0 ? median(gpuKernel) : null,
  timed_step_ms_median: median(wall),
};
if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
else {
  process.stdout.write(`${engine.name} on ${engine.device}, ${modelName}, one shard of ${n}\n`);
  process.stdout.write(`first step (shader compilation)  ${firstMs.toFixed(0)} ms\n`);
  process.stdout.write(`step, median / p90               ${result.step_ms_median.toFixed(2)} / ${result.step_ms_p90.toFixed(2)} ms (${result.samples_per_s.toFixed(0)} samples/s)\n`);
  process.stdout.write(`GPU programs per step            ${kernels}\n`);
  process.stdout.write(`GPU kernel time per step         ${result.gpu_kernel_ms_median === null ? 'n/a (the fused step, or no timestamp queries)' : `${result.gpu_kernel_ms_median.toFixed(2)} ms`}\n`);
}
