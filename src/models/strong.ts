/**
 * `strong`: the project's best MNIST model: the example's two-conv layout, wider, with a wider
 * classifier. It reaches ≥ 99.5% with its own training defaults (config.ts MODEL_DEFAULTS:
 * seeded random affine augmentation, momentum 0.9, a cosine learning-rate schedule).
 *   conv1 1→32 k5 → relu → max-pool 2 → conv2 32→64 k5 → relu → max-pool 2
 *   → flatten 1024 → fc1 1024→256 → relu → dropout(0.5) → fc2 256→10 → log-softmax
 */
import * as tfl from '@tensorflow/tfjs-layers';
import { layer as L } from '../engine/layers.js';
import type { ModelDef } from './types.js';

export function createStrong(): ModelDef {
  return {
    name: 'strong',
    params: [
      { name: 'conv1.weight', shape: [5, 5, 1, 32], fanIn: 1 * 5 * 5 },
      { name: 'conv1.bias', shape: [32], fanIn: 1 * 5 * 5 },
      { name: 'conv2.weight', shape: [5, 5, 32, 64], fanIn: 32 * 5 * 5 },
      { name: 'conv2.bias', shape: [64], fanIn: 32 * 5 * 5 },
      { name: 'fc1.weight', shape: [1024, 256], fanIn: 1024 },
      { name: 'fc1.bias', shape: [256], fanIn: 1024 },
      { name: 'fc2.weight', shape: [256, 10], fanIn: 256 },
      { name: 'fc2.bias', shape: [10], fanIn: 256 },
    ],
    dropouts: [{ name: 'fc1_drop', p: 0.5, units: 256 }],
    featureMaps: ['conv1', 'conv2'],

    // Shapes per sample: 28×28×1 → 24×24×32 → 12×12×32 → 8×8×64 → 4×4×64 → 1024 → 256 → 10.
    layers: [
      L.conv('conv1'), L.relu(), L.maxPool2(), L.tap('conv1'),
      L.conv('conv2'), L.relu(), L.maxPool2(), L.tap('conv2'),
      L.flatten(),
      L.dense('fc1'), L.relu(), L.dropout('fc1_drop'),
      L.dense('fc2'), L.logSoftmax(),
    ],

    buildLayersModel() {
      return tfl.sequential({
        name: 'strong',
        layers: [
          tfl.layers.conv2d({ name: 'conv1', inputShape: [28, 28, 1], filters: 32, kernelSize: 5, activation: 'relu' }),
          tfl.layers.maxPooling2d({ poolSize: 2 }),
          tfl.layers.conv2d({ name: 'conv2', filters: 64, kernelSize: 5, activation: 'relu' }),
          tfl.layers.maxPooling2d({ poolSize: 2 }),
          tfl.layers.flatten(),
          tfl.layers.dense({ name: 'fc1', units: 256, activation: 'relu' }),
          tfl.layers.dropout({ name: 'fc1_drop', rate: 0.5 }),
          tfl.layers.dense({ name: 'fc2', units: 10, activation: 'softmax' }),
        ],
      });
    },
  };
}
