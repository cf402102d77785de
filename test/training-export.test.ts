import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { IMAGE_PIXELS, loadMnist, normalisePixels } from '../src/data/mnist.js';
import { initEngine } from '../src/engine/backend.js';
import { createModel, initialWeights } from '../src/models/index.js';
import { evaluate } from '../src/training/evaluate.js';
import { exportLayersModel, fileSystemLoader } from '../src/training/export.js';
import { tempDir } from './helpers.js';

before(async () => {
  await initEngine({ noCuda: true, engine: 'wasm' });
});

for (const name of ['net', 'lenet'] as const) {
  test(`${name}: the exported layers model opens with tf.loadLayersModel and predicts what the trainer predicts`, async () => {
    const model = createModel(name);
    // Not the initial weights alone: perturb so that every layer matters.
    const weights = initialWeights(model, 5).map((v, i) => v * (1 + 0.1 * Math.sin(i)));
    const dir = tempDir();
    const path = await exportLayersModel(model, weights, dir);
    assert.equal(path, join(dir, 'model', 'model.json'));
    assert.ok(existsSync(join(dir, 'model', 'weights.bin')));

    const loaded = await tfl.loadLayersModel(fileSystemLoader(path));
    const test = loadMnist({ trainLimit: 1, testLimit: 200 }).test;
    const ours = await evaluate(model, weights, test, 100);
    const probs = tf.tidy(() => {
      const x = tf.tensor4d(normalisePixels(test.images.subarray(0, 200 * IMAGE_PIXELS)), [200, 28, 28, 1]);
      return (loaded.predict(x) as tf.Tensor).arraySync() as number[][];
    });
    probs.forEach((row, i) => {
      const argmax = row.indexOf(Math.max(...row));
      assert.equal(argmax, ours.predictions[i], `sample ${i}`);
      assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-4);
    });
    loaded.dispose();
  });
}
