/** Spot checks as plain functions: which engines must agree bit for bit, the comparison, the draw. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ENGINE_TOLERANCE, SpotChecker, bitExact, compareResults } from '../src/coordinator/spot-check.js';
import { rand } from './helpers.js';

const adapter = { vendor: 'nvidia', architecture: 'hopper', description: 'NVIDIA H200', device: '', software: false };

test('bit for bit on the same build and kernels of a deterministic engine only: wasm anywhere, webgpu on the same adapter', () => {
  const build = '0.1.0+sha256:aaaa';
  const wasm = { backend: 'wasm', device: 'cpu (wasm, simd, fused kernels, 1 thread)', engine: 'wasm (fused kernels)', build };
  assert.equal(bitExact(wasm, { ...wasm, device: 'another cpu' }), true);
  assert.equal(bitExact(wasm, { ...wasm, engine: 'wasm (library kernels)' }), false, 'library kernels sum in another order');
  assert.equal(bitExact(wasm, { ...wasm, build: '0.1.0+sha256:bbbb' }), false, 'another build may have other kernels');
  assert.equal(bitExact(wasm, { ...wasm, engine: undefined }), false);
  const gpu = { backend: 'webgpu', device: 'gpu', engine: 'webgpu (fused kernels)', build, adapter };
  assert.equal(bitExact(wasm, gpu), false);
  assert.equal(bitExact(gpu, { ...gpu, adapter: { ...adapter } }), true);
  assert.equal(bitExact(gpu, { ...gpu, adapter: { ...adapter, description: 'llvmpipe' } }), false);
  const node = { backend: 'tfjs-node', device: 'cpu', engine: 'tfjs-node (library kernels)', build };
  assert.equal(bitExact(node, { ...node }), false, 'multi-threaded: compared within the tolerance');
});

test('the comparison: equal bits match; within the tolerance only across engines; a poisoned gradient never', () => {
  const g = rand(5000, 1);
  const same = compareResults({ gradSum: Float32Array.from(g), lossSum: 2 }, { gradSum: g, lossSum: 2 }, true);
  assert.deepEqual([same.match, same.error], [true, 0]);
  const nudged = Float32Array.from(g, (x) => x * (1 + 1e-5));
  assert.equal(compareResults({ gradSum: nudged, lossSum: 2 }, { gradSum: g, lossSum: 2 }, true).match, false, 'one ulp off is a mismatch on the same engine');
  assert.equal(compareResults({ gradSum: nudged, lossSum: 2 }, { gradSum: g, lossSum: 2 }, false).match, true, 'and within the tolerance across engines');
  const scaled = Float32Array.from(g, (x) => x * (1 + 10 * ENGINE_TOLERANCE));
  assert.equal(compareResults({ gradSum: scaled, lossSum: 2 }, { gradSum: g, lossSum: 2 }, false).match, false);
  const poison = new Float32Array(5000).fill(50);
  const verdict = compareResults({ gradSum: poison, lossSum: 2 }, { gradSum: g, lossSum: 2 }, false);
  assert.equal(verdict.match, false);
  assert.match(verdict.detail, /relative L2 error/);
  assert.equal(compareResults({ gradSum: Float32Array.from(g), lossSum: 3 }, { gradSum: g, lossSum: 2 }, true).match, false, 'a false loss is caught too');
});

test('the draw: never at 0, always at 1, about P of the results in between', () => {
  const count = (p: number): number => Array.from({ length: 4000 }, () => new SpotChecker(p)).filter((c) => c.draw()).length;
  assert.equal(count(0), 0);
  assert.equal(count(1), 4000);
  const quarter = count(0.25);
  // 4000 draws at 0.25: mean 1000, standard deviation 27; 10 of them either side.
  assert.ok(quarter > 730 && quarter < 1270, `${quarter} of 4000`);
  assert.throws(() => new SpotChecker(1.5), RangeError);
});
