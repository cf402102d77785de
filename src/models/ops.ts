/** The tfjs implementation of each layer kind (engine/layers.ts), and the forward pass they make. */
import * as tf from '@tensorflow/tfjs-core';
import type { LayerSpec } from '../engine/layers.js';
import type { ForwardOptions, Params } from './types.js';

/** x [N,H,W,Cin], w [kh,kw,Cin,Cout], b [Cout] → [N,H',W',Cout]. */
export function conv(x: tf.Tensor4D, w: tf.Tensor, b: tf.Tensor, pad: 'valid' | 'same' = 'valid'): tf.Tensor4D {
  return tf.add(tf.conv2d(x, w as tf.Tensor4D, 1, pad), b);
}

/** 2×2 max-pool, stride 2: [N,H,W,C] → [N,H/2,W/2,C]. */
export function maxPool2(x: tf.Tensor4D): tf.Tensor4D {
  return tf.maxPool(x, 2, 2, 'valid');
}

export function relu<T extends tf.Tensor>(x: T): T {
  return tf.relu(x);
}

/** [N,H,W,C] → [N, H·W·C] (tfjs's NHWC order, which the layers export's Flatten matches). */
export function flatten(x: tf.Tensor4D): tf.Tensor2D {
  return tf.reshape(x, [x.shape[0], -1]);
}

/** x [N,in], w [in,out], b [out] → [N,out]. */
export function dense(x: tf.Tensor2D, w: tf.Tensor, b: tf.Tensor): tf.Tensor2D {
  return tf.add(tf.matMul(x, w as tf.Tensor2D), b);
}

/** Dropout2d: zeroes whole channels. mask [N,C] (0 or 1/(1−p)) broadcasts over H and W. */
export function dropout2d(x: tf.Tensor4D, mask: tf.Tensor2D | undefined): tf.Tensor4D {
  if (!mask) return x;
  return tf.mul(x, tf.reshape(mask, [mask.shape[0], 1, 1, mask.shape[1]]));
}

/** Dropout on features: mask [N,F]. */
export function dropout(x: tf.Tensor2D, mask: tf.Tensor2D | undefined): tf.Tensor2D {
  return mask ? tf.mul(x, mask) : x;
}

export function logSoftmax(x: tf.Tensor2D): tf.Tensor2D {
  return tf.logSoftmax(x);
}

/** The tfjs forward pass: runs `layers` on normalised images x [N,28,28,1]; returns the last layer's output (log-probabilities [N,10]). */
export function forwardLayers(layers: readonly LayerSpec[], p: Params, x: tf.Tensor4D, opts: ForwardOptions = {}): tf.Tensor2D {
  const { masks, tap } = opts;
  let h: tf.Tensor = x;
  for (const l of layers) {
    switch (l.kind) {
      case 'conv':
        h = conv(h as tf.Tensor4D, p[`${l.name}.weight`], p[`${l.name}.bias`], l.pad);
        break;
      case 'maxPool2':
        h = maxPool2(h as tf.Tensor4D);
        break;
      case 'relu':
        h = relu(h);
        break;
      case 'dropout2d':
        h = dropout2d(h as tf.Tensor4D, masks?.[l.name]);
        break;
      case 'dropout':
        h = dropout(h as tf.Tensor2D, masks?.[l.name]);
        break;
      case 'flatten':
        h = flatten(h as tf.Tensor4D);
        break;
      case 'dense':
        h = dense(h as tf.Tensor2D, p[`${l.name}.weight`], p[`${l.name}.bias`]);
        break;
      case 'logSoftmax':
        h = logSoftmax(h as tf.Tensor2D);
        break;
      case 'tap':
        tap?.(l.name, h);
        break;
    }
  }
  return h as tf.Tensor2D;
}
