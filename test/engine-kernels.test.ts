/**
 * The wasm training kernels of src/engine/kernels against two independent references:
 * tfjs's pure-JS cpu backend (same kernel names, naive loops) and central differences of a
 * scalar loss computed by forward ops only. Plus registration rules, fallbacks, memory.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
// tfjs-core's node bundle registers no gradients; tfjs-layers' bundle registers them all
// (the models import it too).
import '@tensorflow/tfjs-layers';
import { initEngine } from '../src/engine/backend.js';
import {
  conv2DBackpropFilterOptions,
  conv2DBackpropInputOptions,
  fastWasmKernelsRegistered,
  registerFastWasmKernels,
  unregisterFastWasmKernels,
} from '../src/engine/kernels/index.js';
import { rand } from './helpers.js';

type Shape4 = [number, number, number, number];
type Pad = 'valid' | 'same' | number | [[number, number], [number, number], [number, number], [number, number]];

const size = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

/** Runs `kernel` on `backendName` with inputs built from flat arrays; returns the flat result. */
async function runOn(
  backendName: 'cpu' | 'wasm',
  kernel: string,
  inputs: Record<string, { data: Float32Array; shape: number[] }>,
  attrs: tf.NamedAttrMap,
): Promise<{ data: Float32Array; shape: number[] }> {
  await tf.setBackend(backendName);
  try {
    return tf.tidy(() => {
      const ins: Record<string, tf.Tensor> = {};
      for (const [k, v] of Object.entries(inputs)) ins[k] = tf.tensor(v.data, v.shape, 'float32');
      const out = tf.engine().runKernel(kernel, ins, attrs) as tf.Tensor;
      return { data: out.dataSync() as Float32Array, shape: out.shape.slice() };
    });
  } finally {
    await tf.setBackend('wasm');
  }
}

/** max|a−b| ≤ tol · max|b| (and the same shape). */
function assertClose(a: { data: Float32Array; shape: number[] }, b: { data: Float32Array; shape: number[] }, tol: number, what: string): void {
  assert.deepEqual(a.shape, b.shape, `${what}: shape`);
  let scale = 0;
  let err = 0;
  let at = -1;
  for (let i = 0; i < b.data.length; i++) {
    scale = Math.max(scale, Math.abs(b.data[i]));
    const e = Math.abs(a.data[i] - b.data[i]);
    if (Number.isNaN(e)) assert.fail(`${what}: NaN at ${i} (got ${a.data[i]}, want ${b.data[i]})`);
    if (e > err) {
      err = e;
      at = i;
    }
  }
  assert.ok(scale > 0, `${what}: reference is all zeros (test would be vacuous)`);
  assert.ok(err <= tol * scale, `${what}: max |diff| ${err} at ${at} (got ${a.data[at]}, want ${b.data[at]}) > ${tol} × ${scale}`);
}

/** dW by definition, in float64: dW[r,c,i,o] = Σ x[n, oy·sh−top+r, ox·sw−left+c, i] · dy[n,oy,ox,o]. */
function filterGradReference(x: Float32Array, dy: Float32Array, c: ConvCase): Float32Array {
  const info = tf.backend_util.computeConv2DInfo(c.x, c.w, c.s, 1, c.p as 'valid');
  const [N, H, W, ci] = c.x;
  const [kh, kw, , co] = c.w;
  const { outHeight: OH, outWidth: OW, strideHeight: sh, strideWidth: sw } = info;
  const acc = new Float64Array(kh * kw * ci * co);
  for (let n = 0; n < N; n++)
    for (let oy = 0; oy < OH; oy++)
      for (let ox = 0; ox < OW; ox++)
        for (let r = 0; r < kh; r++) {
          const iy = oy * sh - info.padInfo.top + r;
          if (iy < 0 || iy >= H) continue;
          for (let q = 0; q < kw; q++) {
            const ix = ox * sw - info.padInfo.left + q;
            if (ix < 0 || ix >= W) continue;
            for (let i = 0; i < ci; i++) {
              const xv = x[((n * H + iy) * W + ix) * ci + i];
              const a = ((r * kw + q) * ci + i) * co;
              const d = ((n * OH + oy) * OW + ox) * co;
              for (let o = 0; o < co; o++) acc[a + o] += xv * dy[d + o];
            }
          }
        }
  return Float32Array.from(acc);
}

function withFilterMethod<T>(method: 'auto' | 'im2col' | 'conv', f: () => Promise<T>): Promise<T> {
  const prev = conv2DBackpropFilterOptions.method;
  conv2DBackpropFilterOptions.method = method;
  return f().finally(() => {
    conv2DBackpropFilterOptions.method = prev;
  });
}

interface ConvCase {
  name: string;
  x: Shape4;
  w: Shape4;
  s: number | [number, number];
  p: Pad;
}

const CONV_CASES: ConvCase[] = [
  { name: 'net conv1', x: [3, 28, 28, 1], w: [5, 5, 1, 10], s: 1, p: 'valid' },
  { name: 'net conv2', x: [3, 12, 12, 10], w: [5, 5, 10, 20], s: 1, p: 'valid' },
  { name: 'lenet conv1', x: [2, 28, 28, 1], w: [5, 5, 1, 6], s: 1, p: 'same' },
  { name: 'lenet conv2', x: [2, 14, 14, 6], w: [5, 5, 6, 16], s: 1, p: 'valid' },
  { name: 'strong 1→32 same', x: [2, 28, 28, 1], w: [3, 3, 1, 32], s: 1, p: 'same' },
  { name: 'strong 32→32 same', x: [1, 14, 14, 32], w: [3, 3, 32, 32], s: 1, p: 'same' },
  { name: 'strong 32→64 same', x: [1, 14, 14, 32], w: [3, 3, 32, 64], s: 1, p: 'same' },
  { name: 'strong 64→64 same', x: [1, 7, 7, 64], w: [3, 3, 64, 64], s: 1, p: 'same' },
  { name: 'strong 32→32 same, N=4', x: [4, 28, 28, 32], w: [3, 3, 32, 32], s: 1, p: 'same' },
  { name: 'stride 2 same', x: [2, 28, 28, 16], w: [3, 3, 16, 24], s: 2, p: 'same' },
  { name: 'stride 2 valid, last row unused', x: [2, 16, 16, 3], w: [3, 3, 3, 5], s: 2, p: 'valid' },
  { name: 'stride 2 same, even filter', x: [2, 15, 15, 3], w: [4, 4, 3, 5], s: 2, p: 'same' },
  { name: 'stride 2, pad 1', x: [2, 9, 10, 3], w: [3, 3, 3, 4], s: 2, p: 1 },
  // (A numeric pad with a non-square filter or stride gets a wrong output width from tfjs's
  // own shape code, so asymmetric geometry is tested with explicit padding.)
  { name: 'strides [2,3], explicit pad, 3×2 filter', x: [2, 9, 11, 3], w: [3, 2, 3, 4], s: [2, 3], p: [[0, 0], [1, 0], [0, 1], [0, 0]] },
  { name: 'net conv1, N=32', x: [32, 28, 28, 1], w: [5, 5, 1, 10], s: 1, p: 'valid' },
  { name: 'net conv2, N=64', x: [64, 12, 12, 10], w: [5, 5, 10, 20], s: 1, p: 'valid' },
];

function outShapeOf(c: ConvCase): Shape4 {
  const info = tf.backend_util.computeConv2DInfo(c.x, c.w, c.s, 1, c.p as 'valid');
  return info.outShape as Shape4;
}

before(async () => {
  // Registration must be refused while another backend is active.
  await tf.setBackend('cpu');
  registerFastWasmKernels();
  assert.equal(tf.getKernel(tf.Conv2DBackpropFilter, 'wasm'), undefined, 'registered while cpu was active');
  assert.equal(fastWasmKernelsRegistered(), false);
  // The real start-up path (registers our kernels).
  const info = await initEngine({ noCuda: true, engine: 'wasm' });
  assert.equal(info.name, 'wasm');
  assert.equal(tf.getBackend(), 'wasm');
});

describe('registration', () => {
  test('kernels are registered for wasm and registering again changes nothing', () => {
    assert.ok(fastWasmKernelsRegistered());
    const names = [tf.Conv2DBackpropFilter, tf.Conv2DBackpropInput, tf.MaxPoolGrad];
    const funcs = names.map((n) => tf.getKernel(n, 'wasm')?.kernelFunc);
    registerFastWasmKernels();
    registerFastWasmKernels();
    assert.deepEqual(names.map((n) => tf.getKernel(n, 'wasm')?.kernelFunc), funcs);
  });

  test('unregister restores the built-ins; register puts ours back', async () => {
    const ours = tf.getKernel(tf.MaxPoolGrad, 'wasm')!.kernelFunc;
    unregisterFastWasmKernels();
    try {
      assert.equal(tf.getKernel(tf.Conv2DBackpropFilter, 'wasm'), undefined);
      assert.notEqual(tf.getKernel(tf.MaxPoolGrad, 'wasm')!.kernelFunc, ours);
      assert.notEqual(tf.getKernel(tf.Conv2DBackpropInput, 'wasm'), undefined);
      assert.equal(fastWasmKernelsRegistered(), false);
    } finally {
      registerFastWasmKernels();
    }
    assert.equal(tf.getKernel(tf.MaxPoolGrad, 'wasm')!.kernelFunc, ours);
    assert.ok(fastWasmKernelsRegistered());
  });
});

describe('Conv2DBackpropFilter vs cpu backend', () => {
  for (const c of CONV_CASES) {
    test(`${c.name}: x[${c.x}] w[${c.w}] s${c.s} ${c.p}`, async () => {
      const dyShape = outShapeOf(c);
      const inputs = {
        x: { data: rand(size(c.x), 1), shape: c.x },
        dy: { data: rand(size(dyShape), 2), shape: dyShape },
      };
      const attrs = { strides: c.s, pad: c.p, dataFormat: 'NHWC', filterShape: c.w };
      // The cpu backend's kernel is slow (TensorBuffer.get per multiply-add): past ~4M of
      // them (the large-N cases) the reference is the plain float64 loop below instead.
      const want =
        size(c.w) * dyShape[0] * dyShape[1] * dyShape[2] <= 4e6
          ? await runOn('cpu', tf.Conv2DBackpropFilter, inputs, attrs)
          : { data: filterGradReference(inputs.x.data, inputs.dy.data, c), shape: c.w.slice() };
      for (const method of ['auto', 'im2col', 'conv'] as const) {
        const got = await withFilterMethod(method, () => runOn('wasm', tf.Conv2DBackpropFilter, inputs, attrs));
        assertClose(got, want, 1e-4, `dW (${method})`);
      }
    });
  }

  test('im2col split into one-image chunks gives the same sum', async () => {
    const c = CONV_CASES[1]!;
    const dyShape = outShapeOf(c);
    const inputs = { x: { data: rand(size(c.x), 3), shape: c.x }, dy: { data: rand(size(dyShape), 4), shape: dyShape } };
    const attrs = { strides: c.s, pad: c.p, dataFormat: 'NHWC', filterShape: c.w };
    const want = await runOn('cpu', tf.Conv2DBackpropFilter, inputs, attrs);
    const prev = conv2DBackpropFilterOptions.im2colChunkFloats;
    conv2DBackpropFilterOptions.im2colChunkFloats = 1;
    try {
      const got = await withFilterMethod('im2col', () => runOn('wasm', tf.Conv2DBackpropFilter, inputs, attrs));
      assertClose(got, want, 1e-4, 'dW chunked');
    } finally {
      conv2DBackpropFilterOptions.im2colChunkFloats = prev;
    }
  });

  test('dilations other than 1 are refused with a clear error', () => {
    const x = tf.ones([1, 8, 8, 2]);
    const dy = tf.ones([1, 4, 4, 3]);
    assert.throws(
      () => tf.engine().runKernel(tf.Conv2DBackpropFilter, { x, dy }, { strides: 1, pad: 'valid', dataFormat: 'NHWC', filterShape: [3, 3, 2, 3], dilations: 2 }),
      /dilations other than 1/,
    );
    tf.dispose([x, dy]);
  });
});

describe('Conv2DBackpropInput vs cpu backend', () => {
  for (const c of CONV_CASES) {
    test(`${c.name}: x[${c.x}] w[${c.w}] s${c.s} ${c.p}`, async () => {
      const dyShape = outShapeOf(c);
      const inputs = {
        dy: { data: rand(size(dyShape), 5), shape: dyShape },
        filter: { data: rand(size(c.w), 6), shape: c.w },
      };
      const attrs = { strides: c.s, pad: c.p, dataFormat: 'NHWC', inputShape: c.x };
      const want = await runOn('cpu', tf.Conv2DBackpropInput, inputs, attrs);
      const got = await runOn('wasm', tf.Conv2DBackpropInput, inputs, attrs);
      assertClose(got, want, 1e-4, 'dx');
    });
  }

  test('fallbacks to the built-in kernel (stride 2 with spreading off; padding wider than the filter)', async () => {
    const cases: ConvCase[] = [
      { name: 'stride 2', x: [2, 15, 15, 3], w: [3, 3, 3, 5], s: 2, p: 'same' },
      { name: 'wide pad', x: [2, 6, 6, 2], w: [2, 2, 2, 3], s: 1, p: 3 },
    ];
    conv2DBackpropInputOptions.stridedViaConv = false;
    try {
      for (const c of cases) {
        const dyShape = outShapeOf(c);
        const inputs = { dy: { data: rand(size(dyShape), 7), shape: dyShape }, filter: { data: rand(size(c.w), 8), shape: c.w } };
        const attrs = { strides: c.s, pad: c.p, dataFormat: 'NHWC', inputShape: c.x };
        const want = await runOn('cpu', tf.Conv2DBackpropInput, inputs, attrs);
        const got = await runOn('wasm', tf.Conv2DBackpropInput, inputs, attrs);
        assertClose(got, want, 1e-4, `dx ${c.name}`);
      }
    } finally {
      conv2DBackpropInputOptions.stridedViaConv = true;
    }
  });
});

interface PoolCase {
  name: string;
  x: Shape4;
  f: number | [number, number];
  s: number | [number, number];
  p: 'valid' | 'same';
}

const POOL_CASES: PoolCase[] = [
  { name: 'net pool1', x: [3, 24, 24, 10], f: 2, s: 2, p: 'valid' },
  { name: 'net pool2', x: [3, 8, 8, 20], f: 2, s: 2, p: 'valid' },
  { name: 'lenet pool1', x: [2, 28, 28, 6], f: 2, s: 2, p: 'valid' },
  { name: 'lenet pool2', x: [2, 10, 10, 16], f: 2, s: 2, p: 'valid' },
  { name: 'strong pool', x: [2, 28, 28, 32], f: 2, s: 2, p: 'valid' },
  { name: 'odd size, 2×2 s2 same', x: [2, 7, 9, 3], f: 2, s: 2, p: 'same' },
  { name: '3×3 s2 same', x: [2, 13, 13, 3], f: 3, s: 2, p: 'same' },
  { name: '3×3 s1 valid (overlapping)', x: [2, 7, 9, 4], f: 3, s: 1, p: 'valid' },
  { name: '2×3 s[1,2] same', x: [2, 8, 9, 5], f: [2, 3], s: [1, 2], p: 'same' },
  { name: 'net pool1, N=64', x: [64, 24, 24, 10], f: 2, s: 2, p: 'valid' },
];

describe('MaxPoolGrad vs cpu backend', () => {
  for (const c of POOL_CASES) {
    for (const ties of [false, true]) {
      test(`${c.name}: x[${c.x}] f${c.f} s${c.s} ${c.p}${ties ? ', many ties' : ''}`, async () => {
        const xData = rand(size(c.x), 9);
        // With ties (few distinct values) the first maximum in scan order must win.
        if (ties) for (let i = 0; i < xData.length; i++) xData[i] = Math.round(xData[i] * 2);
        const y = await runOn('cpu', tf.MaxPool, { x: { data: xData, shape: c.x } }, { filterSize: c.f, strides: c.s, pad: c.p });
        const inputs = {
          dy: { data: rand(size(y.shape), 10), shape: y.shape },
          input: { data: xData, shape: c.x },
          output: y,
        };
        const attrs = { filterSize: c.f, strides: c.s, pad: c.p };
        const want = await runOn('cpu', tf.MaxPoolGrad, inputs, attrs);
        const got = await runOn('wasm', tf.MaxPoolGrad, inputs, attrs);
        assertClose(got, want, 1e-6, 'dx');
      });
    }
  }
});

/** Σ a·b in float64: the loss of the numerical checks, so its rounding stays far below eps. */
function dot64(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/** Central-difference check of d/dθ of loss() at a few elements of θ (float32, eps 1e-2). */
function checkNumerically(
  name: string,
  values: Float32Array,
  shape: number[],
  analytic: Float32Array,
  loss: (t: tf.Tensor) => number,
  picks: number,
  seed: number,
): void {
  const eps = 1e-2;
  const idx = rand(picks, seed);
  for (let j = 0; j < picks; j++) {
    const i = Math.floor(((idx[j] + 1) / 2) * values.length) % values.length;
    const at = (delta: number): number => {
      const v = values.slice();
      v[i] += delta;
      return tf.tidy(() => loss(tf.tensor(v, shape)));
    };
    const numeric = (at(eps) - at(-eps)) / (2 * eps);
    const a = analytic[i];
    const tol = 2e-2 * Math.max(Math.abs(a), Math.abs(numeric), 1);
    assert.ok(Math.abs(numeric - a) <= tol, `${name}[${i}]: analytic ${a} vs numeric ${numeric}`);
  }
}

describe('gradients on wasm vs central differences', () => {
  for (const c of CONV_CASES.filter((k) => k.x[0] <= 3 && size(k.w) <= 20000)) {
    test(`conv2d ${c.name}`, () => {
      const yShape = outShapeOf(c);
      const xv = rand(size(c.x), 11);
      const wv = rand(size(c.w), 12);
      const rv = rand(size(yShape), 13);
      const r = tf.tensor(rv, yShape);
      const x = tf.tensor(xv, c.x);
      const w = tf.tensor(wv, c.w);
      const f = (xx: tf.Tensor, ww: tf.Tensor): tf.Scalar =>
        tf.sum(tf.mul(tf.conv2d(xx as tf.Tensor4D, ww as tf.Tensor4D, c.s, c.p), r));
      const [gx, gw] = tf.grads(f)([x, w]);
      const fwd = (xx: tf.Tensor, ww: tf.Tensor): number =>
        dot64(tf.conv2d(xx as tf.Tensor4D, ww as tf.Tensor4D, c.s, c.p).dataSync() as Float32Array, rv);
      checkNumerically('dx', xv, c.x, gx!.dataSync() as Float32Array, (t) => fwd(t, w), 4, 14);
      checkNumerically('dW', wv, c.w, gw!.dataSync() as Float32Array, (t) => fwd(x, t), 4, 15);
      tf.dispose([r, x, w, gx!, gw!]);
    });
  }

  for (const c of POOL_CASES.filter((k) => k.x[0] <= 3)) {
    test(`maxPool ${c.name}`, () => {
      // Distinct values ≥ 0.05 apart, so ±eps never changes which element is the maximum.
      const n = size(c.x);
      const order = rand(n, 16);
      const perm = Array.from({ length: n }, (_, i) => i).sort((a, b) => order[a]! - order[b]!);
      const xv = new Float32Array(n);
      perm.forEach((p, rank) => (xv[p] = rank * 0.05));
      const yShape = tf.backend_util.computePool2DInfo(c.x, c.f, c.s, 1, c.p).outShape;
      const rv = rand(size(yShape), 17);
      const r = tf.tensor(rv, yShape);
      const f = (xx: tf.Tensor): tf.Scalar => tf.sum(tf.mul(tf.maxPool(xx as tf.Tensor4D, c.f, c.s, c.p), r));
      const x = tf.tensor(xv, c.x);
      const g = tf.grad(f)(x);
      const fwd = (t: tf.Tensor): number => dot64(tf.maxPool(t as tf.Tensor4D, c.f, c.s, c.p).dataSync() as Float32Array, rv);
      checkNumerically('dx', xv, c.x, g.dataSync() as Float32Array, fwd, 6, 18);
      tf.dispose([r, x, g]);
    });
  }
});

/** A net-like model: conv→relu→pool→conv→relu→pool→dense→logSoftmax, NLL summed. */
function netLoss(x: tf.Tensor4D, labels: tf.Tensor2D) {
  return (w1: tf.Tensor, b1: tf.Tensor, w2: tf.Tensor, b2: tf.Tensor, w3: tf.Tensor): tf.Scalar => {
    const h1 = tf.maxPool(tf.relu(tf.add(tf.conv2d(x, w1 as tf.Tensor4D, 1, 'valid'), b1)) as tf.Tensor4D, 2, 2, 'valid');
    const h2 = tf.maxPool(tf.relu(tf.add(tf.conv2d(h1, w2 as tf.Tensor4D, 1, 'valid'), b2)) as tf.Tensor4D, 2, 2, 'valid');
    const logits = tf.matMul(tf.reshape(h2, [x.shape[0], -1]) as tf.Tensor2D, w3 as tf.Tensor2D);
    return tf.neg(tf.sum(tf.mul(tf.logSoftmax(logits), labels))) as tf.Scalar;
  };
}

describe('end to end', () => {
  const N = 8;
  const shapes: number[][] = [[5, 5, 1, 10], [10], [5, 5, 10, 20], [20], [320, 10]];
  const params = shapes.map((s, i) => rand(size(s), 20 + i).map((v) => v * 0.3));
  const xData = rand(N * 28 * 28, 30).map((v) => (v + 1) / 2);
  const labels = new Float32Array(N * 10);
  for (let i = 0; i < N; i++) labels[i * 10 + (i % 10)] = 1;

  async function gradsOn(backendName: 'cpu' | 'wasm'): Promise<Float32Array[]> {
    await tf.setBackend(backendName);
    try {
      return tf.tidy(() => {
        const f = netLoss(tf.tensor4d(xData, [N, 28, 28, 1]), tf.tensor2d(labels, [N, 10]));
        const ps = params.map((p, i) => tf.tensor(p, shapes[i]));
        return tf.grads(f)(ps).map((g) => g.dataSync() as Float32Array);
      });
    } finally {
      await tf.setBackend('wasm');
    }
  }

  test('tf.grads through a conv/maxPool model on wasm matches cpu', async () => {
    const want = await gradsOn('cpu');
    const got = await gradsOn('wasm');
    got.forEach((g, i) => assertClose({ data: g, shape: shapes[i]! }, { data: want[i]!, shape: shapes[i]! }, 1e-4, `param ${i}`));
  });

  test('no tensors or wasm buffers leak over repeated steps', () => {
    const backend = tf.backend() as unknown as { numDataIds(): number };
    const x = tf.tensor4d(xData, [N, 28, 28, 1]);
    const y = tf.tensor2d(labels, [N, 10]);
    const ps = params.map((p, i) => tf.tensor(p, shapes[i]));
    const f = netLoss(x, y);
    const step = (): void => {
      for (const method of ['auto', 'im2col', 'conv'] as const) {
        conv2DBackpropFilterOptions.method = method;
        tf.tidy(() => {
          tf.grads(f)(ps).forEach((g) => g.dataSync());
        });
      }
      conv2DBackpropFilterOptions.method = 'auto';
    };
    const tensors = tf.memory().numTensors;
    const ids = backend.numDataIds();
    for (let i = 0; i < 10; i++) step();
    assert.equal(tf.memory().numTensors, tensors, 'tensors');
    assert.equal(backend.numDataIds(), ids, 'wasm data ids');
    tf.dispose([x, y, ...ps]);
  });
});
