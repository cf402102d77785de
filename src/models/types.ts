import type * as tf from '@tensorflow/tfjs-core';
import type { Sequential } from '@tensorflow/tfjs-layers';
import type { LayerSpec } from '../engine/layers.js';

export type ModelName = 'net' | 'lenet' | 'strong';
export const MODEL_NAMES: readonly ModelName[] = ['net', 'lenet', 'strong'];

export function isModelName(s: string): s is ModelName {
  return (MODEL_NAMES as readonly string[]).includes(s);
}

/** One trainable tensor. Shapes are tfjs's: conv kernels [kh, kw, in, out], dense kernels [in, out]. */
export interface ParamSpec {
  name: string;
  shape: number[];
  /** fan-in of the layer it belongs to: PyTorch's default init draws U(−1/√fanIn, 1/√fanIn). */
  fanIn: number;
}

/** A dropout layer: `units` mask entries per sample (channels for Dropout2d, features for Dropout). */
export interface DropoutSpec {
  name: string;
  p: number;
  units: number;
}

export type Params = Record<string, tf.Tensor>;

export interface ForwardOptions {
  /** Per dropout layer, a [N, units] mask of 0 and 1/(1−p); absent in evaluation. */
  masks?: Record<string, tf.Tensor2D>;
  /** Receives named intermediate activations (the conv layers' outputs), for pictures. */
  tap?: (name: string, activation: tf.Tensor) => void;
}

export interface ModelDef {
  name: ModelName;
  /** In the model's one canonical order: checkpoints, the wire and weights_sha256 all use it. */
  params: ParamSpec[];
  dropouts: DropoutSpec[];
  /** Names that `tap` receives, in order: the conv layers' outputs after pool and relu. */
  featureMaps: string[];
  /** The network, layer by layer, as data: what both the tfjs forward (ops.ts's forwardLayers) and the fused CPU engine run. */
  layers: LayerSpec[];
  /** The same network as tfjs layers (dropout inactive, softmax output), weights in canonical order. */
  buildLayersModel(): Sequential;
}
