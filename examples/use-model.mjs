// Classifies MNIST digits with a finished run's model, using only the packages `npm ci` installs.
//   node examples/use-model.mjs runs/<run>/model/model.json
//
// The model takes images as a float32 tensor [N, 28, 28, 1]: pixels 0..255 scaled to 0..1, then
// normalised with MNIST's mean and standard deviation, (x / 255 − 0.1307) / 0.3081, as in training.
// It outputs class probabilities [N, 10] (softmax).
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import * as tfl from '@tensorflow/tfjs-layers';
import { loadMnist } from '../dist/src/data/mnist.js';
import { fileSystemLoader } from '../dist/src/training/export.js';

const modelJson = process.argv[2] ?? 'runs/latest/model/model.json';
// tfjs-layers' loadLayersModel reads file:// URLs only with @tensorflow/tfjs-node; this loader
// reads the model folder with Node's own fs instead.
const model = await tfl.loadLayersModel(fileSystemLoader(modelJson));

const { test } = loadMnist({ trainLimit: 1, testLimit: 8 });
const x = tf.tidy(() => tf.div(tf.sub(tf.div(tf.tensor4d(test.images, [test.count, 28, 28, 1], 'float32'), 255), 0.1307), 0.3081));
const probabilities = model.predict(x);
const predicted = await tf.argMax(probabilities, 1).data();
for (let i = 0; i < test.count; i++) console.log(`image ${i}: predicted ${predicted[i]}, label ${test.labels[i]}`);
