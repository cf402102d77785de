import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MomentumSgd } from '../src/training/sgd.js';
import { simdAvailable } from '../src/engine/simd/module.js';
import { momentumAt, DEFAULTS, type TrainConfig } from '../src/config.js';

test("momentum SGD follows PyTorch: v = μv + g, w = w − lr·v", () => {
  const w = Float32Array.from([1, -2]);
  const sgd = new MomentumSgd(2);
  sgd.step(w, Float32Array.from([0.5, 1]), 0.1, 0.9);
  // First step: v = g (buffer starts at zero).
  assert.deepEqual([...w], [Math.fround(1 - 0.05), Math.fround(-2 - 0.1)]);
  sgd.step(w, Float32Array.from([0.5, 1]), 0.1, 0.9);
  // v = 0.9·0.5 + 0.5 = 0.95; w = 0.95 − 0.095.
  assert.ok(Math.abs(w[0] - (0.95 - 0.095)) < 1e-6);
  assert.ok(Math.abs(sgd.velocity[1] - 1.9) < 1e-6);
});

test('momentum ramps linearly when a final value is set', () => {
  const config = { ...DEFAULTS, momentum: 0.5, momentumFinal: 0.99, momentumRampSteps: 100 } as unknown as TrainConfig;
  assert.equal(momentumAt(config, 0, 1000), 0.5);
  assert.ok(Math.abs(momentumAt(config, 50, 1000) - 0.745) < 1e-12);
  assert.equal(momentumAt(config, 500, 1000), 0.99);
  assert.equal(momentumAt({ ...config, momentumFinal: undefined }, 500, 1000), 0.5);
});

test('an update with gradScale gives the bits of scaling the gradient first, then updating', () => {
  const n = 1000;
  const grad = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898) * 43758.5453);
  const w1 = Float32Array.from({ length: n }, (_, i) => Math.cos(i));
  const w2 = Float32Array.from(w1);
  const fused = new MomentumSgd(n);
  const scaledFirst = new MomentumSgd(n);
  for (const [lr, momentum, count] of [[0.01, 0.5, 64], [0.03, 0.9, 60], [0.1, 0.7, 3]]) {
    fused.step(w1, grad, lr, momentum, 1 / count);
    const scaled = grad.map((g) => g * (1 / count));
    scaledFirst.step(w2, scaled, lr, momentum);
  }
  assert.deepEqual(w1, w2);
  assert.deepEqual(fused.velocity, scaledFirst.velocity);
  assert.equal(grad[1], Math.fround(Math.sin(12.9898) * 43758.5453), 'the gradient is left as it was');
});

test('the SIMD update gives the JavaScript loop\'s bits: every length, subnormals, large values, several steps', { skip: !simdAvailable() && 'no WebAssembly SIMD here' }, () => {
  const values = (n: number, seed: number): Float32Array =>
    Float32Array.from({ length: n }, (_, i) => {
      const x = Math.sin((i + 1) * 12.9898 + seed * 78.233) * 43758.5453;
      const kind = (i + seed) % 7;
      // Ordinary values, tiny ones (subnormal products), large ones, exact zeros of both signs.
      return kind === 0 ? x * 1e-40 : kind === 1 ? x * 1e30 : kind === 2 ? (i % 2 ? -0 : 0) : x - Math.floor(x) - 0.5;
    });
  for (const n of [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33, 1000, 21840]) {
    const grad = values(n, 1);
    const kernel = { w: values(n, 2), sgd: new MomentumSgd(n, undefined, { simd: true }) };
    const loop = { w: Float32Array.from(kernel.w), sgd: new MomentumSgd(n, undefined, { simd: false }) };
    assert.equal(kernel.sgd.simd, true);
    assert.equal(loop.sgd.simd, false);
    for (const [lr, momentum, scale] of [[0.01, 0.5, 1 / 64], [0.03, 0.9, 1 / 60], [0.1, 0.99, 1 / 3], [1e-5, 0, 1]]) {
      kernel.sgd.step(kernel.w, grad, lr, momentum, scale);
      loop.sgd.step(loop.w, grad, lr, momentum, scale);
      assert.deepEqual(new Uint32Array(kernel.w.buffer), new Uint32Array(loop.w.buffer), `weights, n = ${n}, lr ${lr}, momentum ${momentum}`);
      assert.deepEqual(new Uint32Array(kernel.sgd.velocity.buffer), new Uint32Array(loop.sgd.velocity.buffer), `velocity, n = ${n}`);
    }
  }
});

test('the SIMD update works on the caller\'s velocity (the checkpoint\'s), and leaves the gradient alone', { skip: !simdAvailable() && 'no WebAssembly SIMD here' }, () => {
  const velocity = Float32Array.from([0.5, -1, 2, 0.25, 3]);
  const sgd = new MomentumSgd(5, velocity, { simd: true });
  const w = new Float32Array(5);
  const grad = Float32Array.from([1, 1, 1, 1, 1]);
  sgd.step(w, grad, 0.1, 0.5);
  assert.equal(sgd.velocity, velocity);
  assert.deepEqual([...velocity], [1.25, 0.5, 2, 1.125, 2.5]);
  assert.deepEqual([...grad], [1, 1, 1, 1, 1]);
  assert.deepEqual([...w], [...velocity].map((v) => Math.fround(-0.1 * v)));
});
