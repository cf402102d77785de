/**
 * The gradient of a shard: what a worker computes and what the single-node fallback computes,
 * with the same code so that both give the same bits.
 */
import * as tf from '@tensorflow/tfjs-core';
import { createEngineNetwork } from '../engine/backend.js';
import { IMAGE_SIZE, NUM_CLASSES, normalisePixels } from '../data/mnist.js';
import { paramLayout, paramSize } from '../models/index.js';
import { forwardLayers } from '../models/ops.js';
import type { ModelDef, Params } from '../models/types.js';
import { type AugmentOptions, augmentAndNormalise } from './augment.js';
import { dropoutMasks } from './dropout.js';

/** A shard: raw pixels, labels and the per-sample keys of its dropout masks. */
export interface ShardData {
  /** [n × 28 × 28] uint8. */
  readonly pixels: Uint8Array;
  readonly labels: Uint8Array;
  readonly keys: Uint32Array;
  /**
   * Where its samples are in the training set (what the pixels and labels were gathered from): a
   * worker that holds the same set is sent these instead of the pixels.
   */
  readonly indices?: Uint32Array;
}

export interface ShardResult {
  /** Σ over the shard's samples of ∂loss_i/∂w, canonical parameter order. */
  gradSum: Float32Array;
  /** Σ of the samples' NLL losses. */
  lossSum: number;
  count: number;
}

export interface GradientComputer {
  /**
   * Gradient sum of `shard` at `weights`; written into `out` when given (no allocation).
   * `onTailReady(from, lossSum)`: out[from…] is final while the rest is still being computed (the
   * fused engine calls it as its backward pass finishes each layer; tfjs never does).
   */
  compute(weights: Float32Array, shard: ShardData, out?: Float32Array, onTailReady?: (from: number, lossSum: number) => void): Promise<ShardResult>;
}

/** Uploads a flat weight vector as one tensor per parameter (inside the caller's tidy). */
export function paramTensors(model: ModelDef, weights: Float32Array): tf.Tensor[] {
  const layout = paramLayout(model);
  return layout.specs.map((spec, i) => tf.tensor(weights.subarray(layout.offsets[i], layout.offsets[i] + paramSize(spec)), spec.shape));
}

export function asParams(model: ModelDef, tensors: readonly tf.Tensor[]): Params {
  const params: Params = {};
  model.params.forEach((spec, i) => (params[spec.name] = tensors[i]));
  return params;
}

export interface GradientOptions {
  /** Seeded augmentation of the shard's images (training only). */
  augment?: AugmentOptions;
  /** false: run the model on tfjs's ops even where the engine has fused kernels of its own (tests, comparisons). */
  fused?: boolean;
  /** false: a computation never pauses for the event loop (see util/yield.ts); for short recomputations. */
  yielding?: boolean;
}

export function createGradientComputer(model: ModelDef, opts: GradientOptions = {}): GradientComputer {
  const layout = paramLayout(model);
  let pixelScratch = new Float32Array(0);
  // The largest masks so far, reused by every later shard.
  const maskScratch: Float32Array[] = [];
  const masksFor = (keys: Uint32Array): Float32Array[] => {
    const masks = dropoutMasks(model.dropouts, keys, maskScratch);
    masks.forEach((m, i) => {
      if (m.buffer !== maskScratch[i]?.buffer) maskScratch[i] = m;
    });
    return masks;
  };
  const fused = opts.fused === false ? undefined : createEngineNetwork(model, [IMAGE_SIZE, IMAGE_SIZE, 1], { yielding: opts.yielding });

  return {
    async compute(weights, shard, out = new Float32Array(layout.total), onTailReady) {
      const n = shard.labels.length;
      if (pixelScratch.length < shard.pixels.length) pixelScratch = new Float32Array(shard.pixels.length);
      const scratch = pixelScratch.subarray(0, shard.pixels.length);
      const x = opts.augment ? augmentAndNormalise(shard.pixels, shard.keys, opts.augment, scratch) : normalisePixels(shard.pixels, scratch);
      if (fused) {
        const lossSum = await fused.trainStep(weights, x, shard.labels, masksFor(shard.keys), out, onTailReady);
        return { gradSum: out, lossSum, count: n };
      }
      const oneHot = new Float32Array(n * NUM_CLASSES);
      for (let i = 0; i < n; i++) oneHot[i * NUM_CLASSES + shard.labels[i]] = 1;
      const masks = masksFor(shard.keys);

      // Every gradient and the loss leave the engine as one tensor [1 + total]: one read-back,
      // which on a GPU is one round trip instead of one per parameter.
      const packed = tf.tidy(() => {
        const xs = tf.tensor4d(x, [n, IMAGE_SIZE, IMAGE_SIZE, 1]);
        const targets = tf.tensor2d(oneHot, [n, NUM_CLASSES]);
        const maskTensors: Record<string, tf.Tensor2D> = {};
        model.dropouts.forEach((d, i) => (maskTensors[d.name] = tf.tensor2d(masks[i], [n, d.units])));
        // NLL summed over the shard: the mean over the global batch is taken after reduction.
        const loss = (...ps: tf.Tensor[]): tf.Scalar =>
          tf.neg(tf.sum(tf.mul(forwardLayers(model.layers, asParams(model, ps), xs, { masks: maskTensors }), targets))) as tf.Scalar;
        const { value, grads } = tf.valueAndGrads(loss)(paramTensors(model, weights));
        return tf.concat([tf.reshape(value, [1]), ...grads.map((g) => tf.reshape(g, [-1]))]);
      });
      let lossSum: number;
      try {
        const values = (await packed.data()) as Float32Array;
        lossSum = values[0];
        out.set(values.subarray(1, 1 + layout.total));
      } finally {
        packed.dispose();
      }
      return { gradSum: out, lossSum, count: n };
    },
  };
}
