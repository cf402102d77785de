/**
 * `net`: the model of the classic PyTorch MNIST example.
 *   conv1 1→10 k5 → max-pool 2 → relu → conv2 10→20 k5 → Dropout2d(0.5) → max-pool 2 → relu
 *   → flatten 320 → fc1 320→50 → relu → dropout(0.5) → fc2 50→10 → log-softmax
 */
import * as tfl from '@tensorflow/tfjs-layers';
import { layer as L } from '../engine/layers.js';
import type { ModelDef } from './types.js';

export function createNet(): ModelDef {
  return {
    name: 'net',
    params: [
      { name: 'conv1.weight', shape: [5, 5, 1, 10], fanIn: 1 * 5 * 5 },
      { name: 'conv1.bias', shape: [10], fanIn: 1 * 5 * 5 },
      { name: 'conv2.weight', shape: [5, 5, 10, 20], fanIn: 10 * 5 * 5 },
      { name: 'conv2.bias', shape: [20], fanIn: 10 * 5 * 5 },
      { name: 'fc1.weight', shape: [320, 50], fanIn: 320 },
      { name: 'fc1.bias', shape: [50], fanIn: 320 },
      { name: 'fc2.weight', shape: [50, 10], fanIn: 50 },
      { name: 'fc2.bias', shape: [10], fanIn: 50 },
    ],
    dropouts: [
      { name: 'conv2_drop', p: 0.5, units: 20 },
      { name: 'fc1_drop', p: 0.5, units: 50 },
    ],
    featureMaps: ['conv1', 'conv2'],

    // Shapes per sample: 28×28×1 → 24×24×10 → 12×12×10 → 8×8×20 → 4×4×20 → 320 → 50 → 10.
    layers: [
      L.conv('conv1'), L.maxPool2(), L.relu(), L.tap('conv1'),
      L.conv('conv2'), L.dropout2d('conv2_drop'), L.maxPool2(), L.relu(), L.tap('conv2'),
      L.flatten(),
      L.dense('fc1'), L.relu(), L.dropout('fc1_drop'),
      L.dense('fc2'), L.logSoftmax(),
    ],

    buildLayersModel() {
      return tfl.sequential({
        name: 'net',
        layers: [
          tfl.layers.conv2d({ name: 'conv1', inputShape: [28, 28, 1], filters: 10, kernelSize: 5 }),
          tfl.layers.maxPooling2d({ poolSize: 2 }),
          tfl.layers.activation({ activation: 'relu' }),
          tfl.layers.conv2d({ name: 'conv2', filters: 20, kernelSize: 5 }),
          // Dropout2d is inactive at inference; a plain Dropout keeps the layer visible in the export.
          tfl.layers.dropout({ name: 'conv2_drop', rate: 0.5 }),
          tfl.layers.maxPooling2d({ poolSize: 2 }),
          tfl.layers.activation({ activation: 'relu' }),
          tfl.layers.flatten(),
          tfl.layers.dense({ name: 'fc1', units: 50, activation: 'relu' }),
          tfl.layers.dropout({ name: 'fc1_drop', rate: 0.5 }),
          tfl.layers.dense({ name: 'fc2', units: 10, activation: 'softmax' }),
        ],
      });
    },
  };
}
