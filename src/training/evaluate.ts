/** Evaluation on the test set (only the coordinator evaluates). */
import * as tf from '@tensorflow/tfjs-core';
import { IMAGE_PIXELS, IMAGE_SIZE, type MnistSplit, normalisePixels } from '../data/mnist.js';
import type { ModelDef } from '../models/types.js';
import { asParams, paramTensors } from './gradients.js';

export interface Evaluation {
  /** Mean NLL over the test samples (PyTorch: summed, then divided by the count). */
  loss: number;
  correct: number;
  count: number;
  accuracy: number;
  /** Predicted class of every test sample, for the confusion matrix. */
  predictions: Uint8Array;
}

export function evaluate(model: ModelDef, weights: Float32Array, test: MnistSplit, batchSize: number): Evaluation {
  const predictions = new Uint8Array(test.count);
  let lossSum = 0;
  let correct = 0;
  const params = paramTensors(model, weights);
  try {
    const p = asParams(model, params);
    for (let start = 0; start < test.count; start += batchSize) {
      const end = Math.min(test.count, start + batchSize);
      const n = end - start;
      const x = normalisePixels(test.images.subarray(start * IMAGE_PIXELS, end * IMAGE_PIXELS));
      const [logp, argmax] = tf.tidy(() => {
        const out = model.forward(p, tf.tensor4d(x, [n, IMAGE_SIZE, IMAGE_SIZE, 1]));
        return [out.dataSync() as Float32Array, tf.argMax(out, 1).dataSync() as Int32Array];
      });
      for (let i = 0; i < n; i++) {
        const label = test.labels[start + i];
        lossSum -= logp[i * 10 + label];
        predictions[start + i] = argmax[i];
        if (argmax[i] === label) correct++;
      }
    }
  } finally {
    params.forEach((t) => t.dispose());
  }
  return { loss: lossSum / test.count, correct, count: test.count, accuracy: correct / test.count, predictions };
}
