/**
 * The fused CPU engine (src/engine/simd) against two independent references on every shape the
 * models use: tfjs's pure-JS cpu backend running the same layer list through autodiff, and
 * central differences of the engine's own loss. Plus a small network with odd sizes, channel
 * padding, 'same' padding and an even kernel, which the models do not cover.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-layers';
import { type LayerSpec, layer as L } from '../src/engine/layers.js';
import { type NetworkDescription, createFusedNetwork, fusedEngineAvailable } from '../src/engine/simd/step.js';
import { createModel } from '../src/models/index.js';
import { forwardLayers } from '../src/models/ops.js';
import { MODEL_NAMES, type Params } from '../src/models/types.js';
import { rand } from './helpers.js';

type Input = readonly [number, number, number];

const size = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

interface Case {
  net: NetworkDescription;
  input: Input;
  n: number;
  weights: Float32Array;
  x: Float32Array;
  labels: Uint8Array;
  masks: Float32Array[];
  classes: number;
}

function makeCase(net: NetworkDescription, input: Input, n: number, classes: number, seed: number): Case {
  const total = net.params.reduce((a, p) => a + size(p.shape), 0);
  // Weights at PyTorch's default scale for each tensor, so activations stay in a useful range.
  const weights = new Float32Array(total);
  let off = 0;
  net.params.forEach((p, i) => {
    const fanIn = p.shape.length === 4 ? p.shape[0] * p.shape[1] * p.shape[2] : p.shape.length === 2 ? p.shape[0] : size(p.shape) * 4;
    const b = 1.5 / Math.sqrt(fanIn);
    weights.set(rand(size(p.shape), seed + i, -b, b), off);
    off += size(p.shape);
  });
  const x = rand(n * size(input), seed + 100, -0.5, 2.8);
  const labels = Uint8Array.from(rand(n, seed + 200, 0, classes), (v) => Math.min(classes - 1, Math.floor(v)));
  const masks = net.dropouts.map((d, i) => Float32Array.from(rand(n * d.units, seed + 300 + i, 0, 1), (u) => (u < 0.5 ? 0 : 2)));
  return { net, input, n, weights, x, labels, masks, classes };
}

/** Loss sum and gradient by tfjs autodiff on the cpu backend, through the same layer list. */
function tfjsReference(c: Case): { loss: number; grad: Float32Array; logp: Float32Array } {
  return tf.tidy(() => {
    const xs = tf.tensor4d(c.x, [c.n, ...c.input]);
    const oneHot = tf.cast(tf.oneHot(tf.tensor1d(Array.from(c.labels), 'int32'), c.classes), 'float32');
    const masks: Record<string, tf.Tensor2D> = {};
    c.net.dropouts.forEach((d, i) => (masks[d.name] = tf.tensor2d(c.masks[i], [c.n, d.units])));
    let off = 0;
    const tensors = c.net.params.map((p) => {
      const t = tf.tensor(c.weights.subarray(off, off + size(p.shape)), p.shape as number[]);
      off += size(p.shape);
      return t;
    });
    const asParams = (ts: tf.Tensor[]): Params => Object.fromEntries(c.net.params.map((p, i) => [p.name, ts[i]]));
    const lossOf = (...ts: tf.Tensor[]): tf.Scalar => tf.neg(tf.sum(tf.mul(forwardLayers(c.net.layers, asParams(ts), xs, { masks }), oneHot))) as tf.Scalar;
    const { value, grads } = tf.valueAndGrads(lossOf)(tensors);
    const grad = new Float32Array(c.weights.length);
    let o = 0;
    grads.forEach((g) => {
      grad.set(g.dataSync() as Float32Array, o);
      o += g.size;
    });
    const logp = forwardLayers(c.net.layers, asParams(tensors), xs).dataSync() as Float32Array;
    return { loss: value.dataSync()[0], grad, logp: Float32Array.from(logp) };
  });
}

/** max|a−b| ≤ tol · max|b|, per parameter tensor (each layer's gradient has its own scale). */
function assertGradClose(net: NetworkDescription, got: Float32Array, want: Float32Array, tol: number, what: string): void {
  let off = 0;
  for (const p of net.params) {
    const len = size(p.shape);
    let scale = 0;
    let err = 0;
    for (let i = off; i < off + len; i++) {
      scale = Math.max(scale, Math.abs(want[i]));
      err = Math.max(err, Math.abs(got[i] - want[i]));
      assert.ok(!Number.isNaN(got[i]), `${what} ${p.name}: NaN at ${i - off}`);
    }
    assert.ok(scale > 0, `${what} ${p.name}: reference gradient is all zeros (vacuous)`);
    assert.ok(err <= tol * scale, `${what} ${p.name}: max |diff| ${err} > ${tol} × ${scale}`);
    off += len;
  }
}

function fusedGradient(c: Case): { loss: number; grad: Float32Array } {
  const fused = createFusedNetwork(c.net, c.input);
  assert.ok(fused, 'the engine serves this network');
  const grad = new Float32Array(c.weights.length);
  const loss = fused.trainStep(c.weights, c.x, c.labels, c.masks, grad);
  return { loss, grad };
}

/** A network with everything the models lack: odd sizes, padded channels, 'same' with Ci > 1, an even kernel. */
const ODD: NetworkDescription & { input: Input } = {
  input: [13, 11, 1],
  // 13×11×1 → 13×11×3 → 6×5×3 → 6×5×8 → 5×4×4 → 2×2×4 → 16 → 7 → 5
  layers: [
    L.conv('a', 'same'), L.relu(), L.maxPool2(),
    L.conv('b', 'same'), L.dropout2d('d1'), L.relu(),
    L.conv('c'), L.maxPool2(), L.relu(),
    L.flatten(),
    L.dense('f'), L.relu(), L.dropout('d2'),
    L.dense('g'), L.logSoftmax(),
  ],
  params: [
    { name: 'a.weight', shape: [3, 3, 1, 3] }, { name: 'a.bias', shape: [3] },
    { name: 'b.weight', shape: [3, 3, 3, 8] }, { name: 'b.bias', shape: [8] },
    { name: 'c.weight', shape: [2, 2, 8, 4] }, { name: 'c.bias', shape: [4] },
    { name: 'f.weight', shape: [16, 7] }, { name: 'f.bias', shape: [7] },
    { name: 'g.weight', shape: [7, 5] }, { name: 'g.bias', shape: [5] },
  ],
  dropouts: [
    { name: 'd1', units: 8 },
    { name: 'd2', units: 7 },
  ],
};

const MNIST_INPUT: Input = [28, 28, 1];

before(async () => {
  await tf.setBackend('cpu');
  assert.ok(fusedEngineAvailable(), 'the kernels were built (npm run build) and this Node runs wasm SIMD');
});

describe('gradients equal tfjs autodiff on the cpu backend', () => {
  for (const name of MODEL_NAMES) {
    for (const n of [1, 7]) {
      test(`${name}, ${n} sample(s)`, () => {
        const c = makeCase(createModel(name), MNIST_INPUT, n, 10, 11 * n);
        const ref = tfjsReference(c);
        const got = fusedGradient(c);
        assert.ok(Math.abs(got.loss - ref.loss) <= 1e-5 * Math.abs(ref.loss), `loss ${got.loss} vs ${ref.loss}`);
        assertGradClose(c.net, got.grad, ref.grad, 2e-5, name);
      });
    }
  }
  test('odd sizes, padded channels, same padding, even kernel', () => {
    for (const n of [2, 5]) {
      const c = makeCase(ODD, ODD.input, n, 5, 5 + n);
      const ref = tfjsReference(c);
      const got = fusedGradient(c);
      assert.ok(Math.abs(got.loss - ref.loss) <= 1e-5 * Math.abs(ref.loss), `loss ${got.loss} vs ${ref.loss}`);
      assertGradClose(ODD, got.grad, ref.grad, 2e-5, `odd n=${n}`);
    }
  });
});

describe('gradients equal central differences of the loss', () => {
  // Every parameter tensor is a layer's kernel output on that layer's shape: checking a few
  // entries of each checks each kernel (forward and gradient) on every shape the model uses.
  const cases: Array<[string, NetworkDescription, Input, number]> = [
    ['net', createModel('net'), MNIST_INPUT, 10],
    ['lenet', createModel('lenet'), MNIST_INPUT, 10],
    ['strong', createModel('strong'), MNIST_INPUT, 10],
    ['odd', ODD, ODD.input, 5],
  ];
  for (const [name, net, input, classes] of cases) {
    test(name, () => {
      const c = makeCase(net, input, 3, classes, 77);
      const fused = createFusedNetwork(net, input)!;
      const grad = new Float32Array(c.weights.length);
      fused.trainStep(c.weights, c.x, c.labels, c.masks, grad);
      const scratch = new Float32Array(c.weights.length);
      const lossAt = (w: Float32Array): number => fused.trainStep(w, c.x, c.labels, c.masks, scratch);
      let off = 0;
      for (const [pi, p] of net.params.entries()) {
        const len = size(p.shape);
        let scale = 0;
        for (let i = off; i < off + len; i++) scale = Math.max(scale, Math.abs(grad[i]));
        const picks = rand(6, 1000 + pi, 0, len);
        for (const pick of picks) {
          const i = off + Math.floor(pick);
          // Kinks (a relu or a max-pool choice flipping inside ±eps) spoil large steps and float32
          // noise spoils small ones: the derivative must match at one of three step sizes.
          const numerics = [1e-3, 3e-4, 1e-4].map((eps) => {
            const w = Float32Array.from(c.weights);
            const plus = Math.fround(c.weights[i] + eps);
            const minus = Math.fround(c.weights[i] - eps);
            w[i] = plus;
            const up = lossAt(w);
            w[i] = minus;
            const down = lossAt(w);
            return (up - down) / (plus - minus);
          });
          const err = Math.min(...numerics.map((v) => Math.abs(v - grad[i])));
          assert.ok(err <= 2e-2 * scale + 2e-3, `${name} ${p.name}[${i - off}]: analytic ${grad[i]}, numeric ${numerics.join(', ')} (scale ${scale})`);
        }
        off += len;
      }
    });
  }
});

describe('behaviour', () => {
  test('forward (evaluation) gives tfjs log-probabilities, dropout inactive', () => {
    for (const name of MODEL_NAMES) {
      const c = makeCase(createModel(name), MNIST_INPUT, 5, 10, 3);
      const ref = tfjsReference(c);
      const got = createFusedNetwork(c.net, MNIST_INPUT)!.forward(c.weights, c.x, c.n);
      assert.equal(got.length, ref.logp.length);
      for (let i = 0; i < got.length; i++) assert.ok(Math.abs(got[i] - ref.logp[i]) <= 1e-4, `${name} logp[${i}] ${got[i]} vs ${ref.logp[i]}`);
    }
  });

  test('the same shard gives the same bits, whatever was computed before and however large the buffers grew', () => {
    const net = createModel('net');
    const small = makeCase(net, MNIST_INPUT, 4, 10, 9);
    const large = makeCase(net, MNIST_INPUT, 40, 10, 10);
    const fresh = fusedGradient(small);
    const reused = createFusedNetwork(net, MNIST_INPUT)!;
    const g = new Float32Array(small.weights.length);
    reused.trainStep(large.weights, large.x, large.labels, large.masks, g);
    const loss = reused.trainStep(small.weights, small.x, small.labels, small.masks, g);
    assert.equal(loss, fresh.loss);
    assert.deepEqual(g, fresh.grad);
  });

  test('the chunk size (samples through the network at a time) changes no bit of the result', () => {
    for (const name of MODEL_NAMES) {
      const c = makeCase(createModel(name), MNIST_INPUT, 13, 10, 31);
      const results = [1, 3, 8, 64].map((chunk) => {
        const grad = new Float32Array(c.weights.length);
        const loss = createFusedNetwork(c.net, MNIST_INPUT, { chunk })!.trainStep(c.weights, c.x, c.labels, c.masks, grad);
        const logp = createFusedNetwork(c.net, MNIST_INPUT, { chunk })!.forward(c.weights, c.x, c.n);
        return { loss, grad, logp };
      });
      for (const r of results.slice(1)) {
        assert.equal(r.loss, results[0].loss, name);
        assert.deepEqual(r.grad, results[0].grad, name);
        assert.deepEqual(r.logp, results[0].logp, name);
      }
    }
  });

  test('each tail it reports ready mid-backward is already the final gradient', () => {
    for (const name of MODEL_NAMES) {
      const c = makeCase(createModel(name), MNIST_INPUT, 3, 10, 21);
      const fused = createFusedNetwork(c.net, MNIST_INPUT)!;
      const grad = new Float32Array(c.weights.length).fill(Number.NaN);
      const tails: Array<{ from: number; values: Float32Array; loss: number }> = [];
      const loss = fused.trainStep(c.weights, c.x, c.labels, c.masks, grad, (from, lossSum) =>
        tails.push({ from, values: grad.slice(from), loss: lossSum }),
      );
      // One report per layer with parameters but the first: net has 4 such layers.
      assert.equal(tails.length, c.net.params.length / 2 - 1, name);
      for (let i = 1; i < tails.length; i++) assert.ok(tails[i].from < tails[i - 1].from, 'tails grow towards the front');
      for (const t of tails) {
        assert.deepEqual(t.values, grad.slice(t.from), `${name}: tail from ${t.from} changed after it was reported`);
        assert.equal(t.loss, loss);
      }
    }
  });

  test('the profile option times every layer that computes, forward and backward', () => {
    const c = makeCase(createModel('net'), MNIST_INPUT, 4, 10, 8);
    const profile = new Map<string, number>();
    createFusedNetwork(c.net, MNIST_INPUT, { profile })!.trainStep(c.weights, c.x, c.labels, c.masks, new Float32Array(c.weights.length));
    for (const layer of ['conv1 (conv)', 'conv2 (conv)', 'fc1 (dense)', 'fc2 (dense)', 'conv2_drop (dropout2d)', 'maxPool2 after conv1']) {
      for (const pass of ['forward', 'backward']) assert.ok((profile.get(`${layer} ${pass}`) ?? -1) >= 0, `${layer} ${pass} timed`);
    }
  });

  test('a non-finite weight gives a non-finite gradient (divergence stays visible)', () => {
    const c = makeCase(createModel('net'), MNIST_INPUT, 2, 10, 4);
    c.weights[0] = Number.NaN;
    const got = fusedGradient(c);
    assert.ok(!Number.isFinite(got.loss) || got.grad.some((v) => !Number.isFinite(v)));
  });

  test('networks it cannot run are refused, so that tfjs runs them', () => {
    const paddedFlatten: NetworkDescription = {
      layers: [L.conv('a'), L.flatten(), L.dense('f'), L.logSoftmax()],
      params: [{ name: 'a.weight', shape: [3, 3, 1, 3] }, { name: 'a.bias', shape: [3] }, { name: 'f.weight', shape: [3 * 26 * 26, 10] }, { name: 'f.bias', shape: [10] }],
      dropouts: [],
    };
    assert.equal(createFusedNetwork(paddedFlatten, MNIST_INPUT), undefined, 'flatten over padded channels');
    const noSoftmax: NetworkDescription = { layers: ODD.layers.slice(0, -1), params: ODD.params, dropouts: ODD.dropouts };
    assert.equal(createFusedNetwork(noSoftmax, ODD.input), undefined, 'no log-softmax at the end');
    const missing: LayerSpec[] = [L.flatten(), L.dense('nope'), L.logSoftmax()];
    assert.equal(createFusedNetwork({ layers: missing, params: [], dropouts: [] }, MNIST_INPUT), undefined, 'unknown parameter');
  });
});
