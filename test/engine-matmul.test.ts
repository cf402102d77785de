/** The wasm BatchMatMul override (transposes first) against the pure-JS cpu backend. */
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { initEngine } from '../src/engine/backend.js';
import { fastWasmKernelsRegistered } from '../src/engine/kernels/index.js';

before(async () => {
  await initEngine({ noCuda: true, engine: 'wasm' });
});

async function on<T>(backend: string, f: () => T): Promise<T> {
  const previous = tf.getBackend();
  await tf.setBackend(backend);
  try {
    return f();
  } finally {
    await tf.setBackend(previous);
  }
}

// The shapes the dense layers' gradients use: x [N,in], dy [N,out], W [in,out].
const CASES: Array<[number[], number[], boolean, boolean]> = [
  [[64, 320], [64, 50], true, false], // dW = xᵀ·dy (net fc1)
  [[64, 50], [320, 50], false, true], // dx = dy·Wᵀ
  [[64, 1024], [64, 256], true, false], // strong fc1
  [[3, 7, 5], [3, 7, 4], true, false], // batched
  [[5, 7], [4, 5], true, true],
  [[6, 5], [5, 4], false, false], // untouched path
];

test('BatchMatMul with transposes matches the cpu backend on every dense-layer shape', async () => {
  assert.ok(fastWasmKernelsRegistered());
  for (const [aShape, bShape, transposeA, transposeB] of CASES) {
    const a = Float32Array.from({ length: aShape.reduce((x, y) => x * y) }, (_, i) => Math.sin(i * 0.37));
    const b = Float32Array.from({ length: bShape.reduce((x, y) => x * y) }, (_, i) => Math.cos(i * 0.11));
    const run = (): Float32Array =>
      tf.tidy(() => tf.matMul(tf.tensor(a, aShape) as unknown as tf.Tensor2D, tf.tensor(b, bShape) as unknown as tf.Tensor2D, transposeA, transposeB).dataSync() as Float32Array);
    const before = tf.memory().numTensors;
    const ours = await on('wasm', run);
    const reference = await on('cpu', run);
    assert.equal(ours.length, reference.length);
    for (let i = 0; i < ours.length; i++) {
      assert.ok(Math.abs(ours[i] - reference[i]) <= 1e-4 * (1 + Math.abs(reference[i])), `${aShape}·${bShape} (${transposeA},${transposeB}) at ${i}`);
    }
    assert.equal(tf.memory().numTensors, before, 'no tensor leaked');
  }
});

test('the gradient of a dense layer through the override matches the cpu backend', async () => {
  const x = Float32Array.from({ length: 8 * 12 }, (_, i) => Math.sin(i));
  const w = Float32Array.from({ length: 12 * 5 }, (_, i) => Math.cos(i));
  const grads = (): number[][] =>
    tf.tidy(() => {
      const g = tf.grads((xs: tf.Tensor, ws: tf.Tensor) => tf.sum(tf.square(tf.matMul(xs as tf.Tensor2D, ws as tf.Tensor2D))))([tf.tensor2d(x, [8, 12]), tf.tensor2d(w, [12, 5])]);
      return g.map((t) => Array.from(t.dataSync()));
    });
  const ours = await on('wasm', grads);
  const reference = await on('cpu', grads);
  ours.forEach((g, k) => g.forEach((v, i) => assert.ok(Math.abs(v - reference[k][i]) < 1e-3 * (1 + Math.abs(reference[k][i])))));
});
