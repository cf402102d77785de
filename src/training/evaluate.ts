/** Evaluation on the test set (only the coordinator evaluates). */
import * as tf from '@tensorflow/tfjs-core';
import { IMAGE_PIXELS, IMAGE_SIZE, type MnistSplit, NUM_CLASSES, normalisePixels } from '../data/mnist.js';
import { forwardLayers } from '../models/ops.js';
import type { ModelDef } from '../models/types.js';
import { type EngineNetwork, createEngineNetwork } from '../engine/backend.js';
import { createYielder } from '../util/yield.js';
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

export type Evaluator = (weights: Float32Array, test: MnistSplit, batchSize: number) => Promise<Evaluation>;

/** An evaluator for `model`, on the fused SIMD kernels where the engine uses them, else on tfjs. */
export function createEvaluator(model: ModelDef): Evaluator {
  const fused = createEngineNetwork(model, [IMAGE_SIZE, IMAGE_SIZE, 1]);
  return fused ? (weights, test) => evaluateFused(fused, weights, test) : (weights, test, batchSize) => evaluate(model, weights, test, batchSize);
}

function evaluateFused(net: EngineNetwork, weights: Float32Array, test: MnistSplit): Promise<Evaluation> {
  // The engine's own chunk bounds its buffers (a CPU chunk stays in cache).
  return evaluateInChunks(test, net.evalChunk, (x, n) => net.forward(weights, x, n));
}

/** Evaluation on tfjs's active backend, `batchSize` images at a time. */
export async function evaluate(model: ModelDef, weights: Float32Array, test: MnistSplit, batchSize: number): Promise<Evaluation> {
  const params = paramTensors(model, weights);
  try {
    const p = asParams(model, params);
    return await evaluateInChunks(test, batchSize, async (x, n) => {
      const logp = tf.tidy(() => forwardLayers(model.layers, p, tf.tensor4d(x, [n, IMAGE_SIZE, IMAGE_SIZE, 1])));
      try {
        // Read back asynchronously: a GPU engine has no synchronous read.
        return (await logp.data()) as Float32Array;
      } finally {
        logp.dispose();
      }
    });
  } finally {
    params.forEach((t) => t.dispose());
  }
}

/**
 * Scores the test set `chunk` images at a time: `logProbs(x, n)` gives the log-probabilities
 * [n × 10] of n normalised images; the prediction is the first most probable class.
 */
async function evaluateInChunks(test: MnistSplit, chunk: number, logProbs: (x: Float32Array, n: number) => Promise<Float32Array>): Promise<Evaluation> {
  const predictions = new Uint8Array(test.count);
  let lossSum = 0;
  let correct = 0;
  const scratch = new Float32Array(Math.min(chunk, test.count) * IMAGE_PIXELS);
  // Timers and heartbeats run between chunks of a long evaluation.
  const pause = createYielder();
  for (let start = 0; start < test.count; start += chunk) {
    await pause();
    const n = Math.min(chunk, test.count - start);
    const x = normalisePixels(test.images.subarray(start * IMAGE_PIXELS, (start + n) * IMAGE_PIXELS), scratch.subarray(0, n * IMAGE_PIXELS));
    const logp = await logProbs(x, n);
    for (let i = 0; i < n; i++) {
      const row = i * NUM_CLASSES;
      const label = test.labels[start + i];
      lossSum -= logp[row + label];
      let best = 0;
      for (let c = 1; c < NUM_CLASSES; c++) if (logp[row + c] > logp[row + best]) best = c;
      predictions[start + i] = best;
      if (best === label) correct++;
    }
  }
  return { loss: lossSum / test.count, correct, count: test.count, accuracy: correct / test.count, predictions };
}
