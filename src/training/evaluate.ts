/** Evaluation on the test set (only the coordinator evaluates). */
import * as tf from '@tensorflow/tfjs-core';
import { IMAGE_PIXELS, IMAGE_SIZE, type MnistSplit, normalisePixels } from '../data/mnist.js';
import { forwardLayers } from '../models/ops.js';
import type { ModelDef } from '../models/types.js';
import { fusedKernelsEnabled } from '../engine/backend.js';
import { type FusedNetwork, createFusedNetwork } from '../engine/simd/step.js';
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

export type Evaluator = (weights: Float32Array, test: MnistSplit, batchSize: number) => Evaluation;

/** The fused engine evaluates in chunks of at most this many images, to bound its buffers. */
const FUSED_CHUNK = 128;

/** An evaluator for `model`, on the fused SIMD kernels where the engine uses them, else on tfjs. */
export function createEvaluator(model: ModelDef): Evaluator {
  const fused = fusedKernelsEnabled() ? createFusedNetwork(model, [IMAGE_SIZE, IMAGE_SIZE, 1]) : undefined;
  return fused ? (weights, test) => evaluateFused(fused, weights, test) : (weights, test, batchSize) => evaluate(model, weights, test, batchSize);
}

function evaluateFused(net: FusedNetwork, weights: Float32Array, test: MnistSplit): Evaluation {
  const predictions = new Uint8Array(test.count);
  let lossSum = 0;
  let correct = 0;
  const scratch = new Float32Array(FUSED_CHUNK * IMAGE_PIXELS);
  for (let start = 0; start < test.count; start += FUSED_CHUNK) {
    const n = Math.min(FUSED_CHUNK, test.count - start);
    const x = normalisePixels(test.images.subarray(start * IMAGE_PIXELS, (start + n) * IMAGE_PIXELS), scratch.subarray(0, n * IMAGE_PIXELS));
    const logp = net.forward(weights, x, n); // [n, 10]
    for (let i = 0; i < n; i++) {
      const label = test.labels[start + i];
      lossSum -= logp[i * 10 + label];
      let best = 0;
      for (let c = 1; c < 10; c++) if (logp[i * 10 + c] > logp[i * 10 + best]) best = c;
      predictions[start + i] = best;
      if (best === label) correct++;
    }
  }
  return { loss: lossSum / test.count, correct, count: test.count, accuracy: correct / test.count, predictions };
}

/** Evaluation on tfjs's active backend, `batchSize` images at a time. */
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
        const out = forwardLayers(model.layers, p, tf.tensor4d(x, [n, IMAGE_SIZE, IMAGE_SIZE, 1]));
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
