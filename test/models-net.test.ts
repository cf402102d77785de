import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs-core';
import { initEngine } from '../src/engine/backend.js';
import { createModel, describeModel, initialWeights, paramLayout } from '../src/models/index.js';
import { forwardLayers } from '../src/models/ops.js';
import { asParams, paramTensors } from '../src/training/gradients.js';
import { dropoutMasks } from '../src/training/dropout.js';

before(async () => {
  await initEngine({ noCuda: true, engine: 'wasm' });
});

test('net and lenet have the parameter counts of their PyTorch originals', () => {
  // PyTorch: Net 21,840 parameters; LeNet-5 (6/16 channels, 400-120-84-10) 61,706.
  assert.equal(paramLayout(createModel('net')).total, 21840);
  assert.equal(paramLayout(createModel('lenet')).total, 61706);
  assert.match(describeModel(createModel('net')), /21,840 trainable parameters/);
});

test("initial weights follow PyTorch's default bounds and the seed", () => {
  const model = createModel('net');
  const layout = paramLayout(model);
  const w = initialWeights(model, 1);
  assert.deepEqual(initialWeights(model, 1), w);
  assert.notDeepEqual(initialWeights(model, 2), w);
  layout.specs.forEach((spec, i) => {
    const size = spec.shape.reduce((a, b) => a * b, 1);
    const view = w.subarray(layout.offsets[i], layout.offsets[i] + size);
    const bound = 1 / Math.sqrt(spec.fanIn);
    const max = Math.max(...view.map(Math.abs));
    assert.ok(max <= bound, `${spec.name}: ${max} > ${bound}`);
    if (size >= 50) assert.ok(max > 0.8 * bound, `${spec.name} does not fill its range`);
  });
});

test('forward gives log-probabilities of the right shape for both models', () => {
  for (const name of ['net', 'lenet'] as const) {
    const model = createModel(name);
    const w = initialWeights(model, 1);
    const out = tf.tidy(() => {
      const logp = forwardLayers(model.layers, asParams(model, paramTensors(model, w)), tf.randomNormal([3, 28, 28, 1]) as tf.Tensor4D);
      return { shape: logp.shape, sums: tf.sum(tf.exp(logp), 1).arraySync() as number[] };
    });
    assert.deepEqual(out.shape, [3, 10]);
    for (const s of out.sums) assert.ok(Math.abs(s - 1) < 1e-5);
  }
});

test('the tap sees every conv layer output after pool and relu', () => {
  const model = createModel('net');
  const seen: Array<[string, number[], number]> = [];
  tf.tidy(() => {
    forwardLayers(model.layers, asParams(model, paramTensors(model, initialWeights(model, 1))), tf.randomNormal([2, 28, 28, 1]) as tf.Tensor4D, {
      tap: (name, t) => seen.push([name, t.shape, tf.min(t).dataSync()[0]]),
    });
  });
  assert.deepEqual(seen.map(([n, s]) => [n, s]), [['conv1', [2, 12, 12, 10]], ['conv2', [2, 4, 4, 20]]]);
  for (const [, , min] of seen) assert.ok(min >= 0, 'after relu');
});

test('dropout masks: a function of the sample key, whole channels, scaled by 1/(1-p)', () => {
  const specs = createModel('net').dropouts;
  const keys = Uint32Array.from({ length: 400 }, (_, i) => i * 7919 + 1);
  const [channelMask, featureMask] = dropoutMasks(specs, keys);
  assert.equal(channelMask.length, 400 * 20);
  assert.equal(featureMask.length, 400 * 50);
  const values = new Set([...channelMask, ...featureMask]);
  assert.deepEqual([...values].sort(), [0, 2]);
  const kept = channelMask.reduce((a, v) => a + (v > 0 ? 1 : 0), 0) / channelMask.length;
  assert.ok(Math.abs(kept - 0.5) < 0.03, `kept ${kept}`);
  // The same key gives the same mask wherever it is computed, whatever its neighbours.
  const [alone] = dropoutMasks(specs, keys.subarray(17, 18));
  assert.deepEqual(alone, channelMask.subarray(17 * 20, 18 * 20));

  // Given earlier masks to reuse, it writes into them (no new arrays) and gives the same values.
  const reuse = [new Float32Array(400 * 20).fill(9), new Float32Array(400 * 50).fill(9)];
  const again = dropoutMasks(specs, keys.subarray(0, 300), reuse);
  again.forEach((m, i) => assert.equal(m.buffer, reuse[i].buffer));
  assert.deepEqual(again[0], channelMask.subarray(0, 300 * 20));
  assert.deepEqual(again[1], featureMask.subarray(0, 300 * 50));
  // Arrays too small to hold the masks are not reused.
  const grown = dropoutMasks(specs, keys, [new Float32Array(20), new Float32Array(50)]);
  assert.deepEqual(grown, [channelMask, featureMask]);
});
