/**
 * The layers a model is written in, as data. The same list drives the tfjs forward pass
 * (models/ops.ts, for every backend, evaluation and pictures) and the fused CPU engine
 * (engine/simd/step.ts), so that a model is described exactly once.
 *
 * Parameters are found by name: a conv or dense layer `fc1` uses `fc1.weight` and `fc1.bias`;
 * a dropout layer's mask is the model's DropoutSpec of the same name.
 */
export type LayerSpec =
  /** Convolution, stride 1; weight [k, k, in, out]. 'same' pads (k−1)/2 zeros on each side. */
  | { kind: 'conv'; name: string; pad: 'valid' | 'same' }
  /** 2×2 max-pool, stride 2. */
  | { kind: 'maxPool2' }
  | { kind: 'relu' }
  /** Dropout2d: zeroes whole channels of a feature map. */
  | { kind: 'dropout2d'; name: string }
  /** Dropout on the features of a flat layer. */
  | { kind: 'dropout'; name: string }
  /** [H, W, C] → [H·W·C] in NHWC order. */
  | { kind: 'flatten' }
  /** Fully connected; weight [in, out]. */
  | { kind: 'dense'; name: string }
  | { kind: 'logSoftmax' }
  /** Marks a named feature map (a conv layer's output after pool and relu), for pictures. */
  | { kind: 'tap'; name: string };

export type LayerKind = LayerSpec['kind'];

export const layer = {
  conv: (name: string, pad: 'valid' | 'same' = 'valid'): LayerSpec => ({ kind: 'conv', name, pad }),
  maxPool2: (): LayerSpec => ({ kind: 'maxPool2' }),
  relu: (): LayerSpec => ({ kind: 'relu' }),
  dropout2d: (name: string): LayerSpec => ({ kind: 'dropout2d', name }),
  dropout: (name: string): LayerSpec => ({ kind: 'dropout', name }),
  flatten: (): LayerSpec => ({ kind: 'flatten' }),
  dense: (name: string): LayerSpec => ({ kind: 'dense', name }),
  logSoftmax: (): LayerSpec => ({ kind: 'logSoftmax' }),
  tap: (name: string): LayerSpec => ({ kind: 'tap', name }),
};
