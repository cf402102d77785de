/**
 * `lenet`: LeNet-5 as the study compared it (relu before pool, no dropout).
 *   conv1 1→6 k5 pad 2 → relu → max-pool 2 → conv2 6→16 k5 → relu → max-pool 2
 *   → flatten 400 → fc1 400→120 → relu → fc2 120→84 → relu → fc3 84→10 → log-softmax
 */
import * as tfl from '@tensorflow/tfjs-layers';
import { layer as L } from '../engine/layers.js';
import type { ModelDef } from './types.js';

export function createLeNet(): ModelDef {
  return {
    name: 'lenet',
    params: [
      { name: 'conv1.weight', shape: [5, 5, 1, 6], fanIn: 1 * 5 * 5 },
      { name: 'conv1.bias', shape: [6], fanIn: 1 * 5 * 5 },
      { name: 'conv2.weight', shape: [5, 5, 6, 16], fanIn: 6 * 5 * 5 },
      { name: 'conv2.bias', shape: [16], fanIn: 6 * 5 * 5 },
      { name: 'fc1.weight', shape: [400, 120], fanIn: 400 },
      { name: 'fc1.bias', shape: [120], fanIn: 400 },
      { name: 'fc2.weight', shape: [120, 84], fanIn: 120 },
      { name: 'fc2.bias', shape: [84], fanIn: 120 },
      { name: 'fc3.weight', shape: [84, 10], fanIn: 84 },
      { name: 'fc3.bias', shape: [10], fanIn: 84 },
    ],
    dropouts: [],
    featureMaps: ['conv1', 'conv2'],

    // Shapes per sample: 28×28×1 → 28×28×6 → 14×14×6 → 10×10×16 → 5×5×16 → 400 → 120 → 84 → 10.
    layers: [
      L.conv('conv1', 'same'), L.relu(), L.maxPool2(), L.tap('conv1'),
      L.conv('conv2'), L.relu(), L.maxPool2(), L.tap('conv2'),
      L.flatten(),
      L.dense('fc1'), L.relu(),
      L.dense('fc2'), L.relu(),
      L.dense('fc3'), L.logSoftmax(),
    ],

    buildLayersModel() {
      return tfl.sequential({
        name: 'lenet',
        layers: [
          tfl.layers.conv2d({ name: 'conv1', inputShape: [28, 28, 1], filters: 6, kernelSize: 5, padding: 'same', activation: 'relu' }),
          tfl.layers.maxPooling2d({ poolSize: 2 }),
          tfl.layers.conv2d({ name: 'conv2', filters: 16, kernelSize: 5, activation: 'relu' }),
          tfl.layers.maxPooling2d({ poolSize: 2 }),
          tfl.layers.flatten(),
          tfl.layers.dense({ name: 'fc1', units: 120, activation: 'relu' }),
          tfl.layers.dense({ name: 'fc2', units: 84, activation: 'relu' }),
          tfl.layers.dense({ name: 'fc3', units: 10, activation: 'softmax' }),
        ],
      });
    },
  };
}
