/**
 * --grad-dtype's encodings: float16 against @petamoriken/float16's rounding for every float16 value
 * and the midpoints between them, bfloat16 by round-to-nearest-even on the upper half, tensors that
 * travel in them (messages, the reducer), and a gradient of the wrong dtype refused.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { f16round } from '@petamoriken/float16';
import { Reducer } from '../src/coordinator/reducer.js';
import { bytesPerElement, decodeTensor, encodeTensor, receivedFloat32, roundTrip } from '../src/protocol/grad-dtype.js';
import { decodeCoordinatorMessage, decodeWorkerMessage, encode, encodeAssign, encodeWeightsFrame } from '../src/protocol/messages.js';
import { rand } from './helpers.js';

const bytes = (a: Uint16Array | Float32Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** Every finite float16 value, its neighbours' midpoints, and float32s on either side of them. */
function float16Probes(): Float32Array {
  const table = new Float32Array(65536);
  decodeTensor(bytes(Uint16Array.from({ length: 65536 }, (_, i) => i)), 'float16', table);
  const finite = [...table].filter(Number.isFinite).sort((a, b) => a - b);
  const probes: number[] = [...finite];
  for (let i = 1; i < finite.length; i++) {
    const mid = (finite[i - 1] + finite[i]) / 2; // exact in float32: float16 has 13 bits fewer
    probes.push(mid, Math.fround(mid * (1 + 2 ** -23)), Math.fround(mid * (1 - 2 ** -23)));
  }
  probes.push(65519, 65520, 65536, 1e6, -1e6, 1e-9, -1e-9, 5.9604644775390625e-8 / 2, Infinity, -Infinity);
  return Float32Array.from(probes);
}

test('float16: the loop rounds as the library does (to nearest, ties to even), overflow to Infinity, NaN kept', () => {
  const probes = float16Probes();
  const encoded = encodeTensor(probes, 'float16') as Uint16Array;
  const back = new Float32Array(probes.length);
  decodeTensor(bytes(encoded), 'float16', back);
  for (let i = 0; i < probes.length; i++) {
    if (!Object.is(back[i], f16round(probes[i]))) assert.fail(`${probes[i]} → ${back[i]}, the library says ${f16round(probes[i])}`);
  }
  assert.equal(back[probes.indexOf(65520)], Infinity, 'past 65504 + half a step: Infinity');
  assert.equal(back[probes.indexOf(65519)], 65504);
  const nan = new Float32Array(1);
  decodeTensor(bytes(encodeTensor(Float32Array.of(NaN), 'float16') as Uint16Array), 'float16', nan);
  assert.ok(Number.isNaN(nan[0]));
});

test('bfloat16: the upper half of the float32, rounded to nearest, ties to even', () => {
  const u = Uint32Array.of(
    0x3f800000, // 1: exact
    0x3f808000, // 1 + 2^-8: a tie, the even neighbour is 1
    0x3f818000, // a tie between 0x3f81 and 0x3f82: to 0x3f82 (even)
    0x3f808001, // just above a tie: up
    0xbf807fff, // just below a tie, negative: down in magnitude
    0x7f7fffff, // float32's largest: rounds past bfloat16's largest, to Infinity
    0x7fc00001, // NaN stays NaN
  );
  const encoded = encodeTensor(new Float32Array(u.buffer), 'bfloat16') as Uint16Array;
  assert.deepEqual([...encoded].map((b) => b.toString(16)), ['3f80', '3f80', '3f82', '3f81', 'bf80', '7f80', '7fc0']);
  const back = new Float32Array(u.length);
  decodeTensor(bytes(encoded), 'bfloat16', back);
  assert.equal(back[0], 1);
  assert.equal(back[5], Infinity);
  assert.ok(Number.isNaN(back[6]));
});

test('roundTrip gives the bits of an encode and a decode, for both 16-bit dtypes', () => {
  const x = rand(5000, 7, -70000, 70000);
  x.set(rand(2000, 8, -1e-6, 1e-6), 3000);
  for (const dtype of ['float16', 'bfloat16'] as const) {
    const viaWire = new Float32Array(x.length);
    decodeTensor(bytes(encodeTensor(x, dtype) as Uint16Array), dtype, viaWire);
    const inPlace = x.slice();
    roundTrip(inPlace, dtype);
    assert.deepEqual(bytes(inPlace), bytes(viaWire), dtype);
    assert.notDeepEqual(bytes(inPlace), bytes(x), `${dtype} rounds`);
  }
  const same = x.slice();
  roundTrip(same, 'float32');
  assert.deepEqual(same, x);
});

test('a 16-bit tensor travels in half the bytes, names its dtype, and decodes from any alignment', () => {
  const grad = rand(21840, 3, -2, 2);
  const f32 = encode({ type: 'result', step: 1, shard: 0, weightsVersion: 1, gradSum: grad, lossSum: 1, count: 16, computeMs: 1 });
  const half = encodeTensor(grad, 'float16') as Uint16Array;
  const f16 = encode({ type: 'result', step: 1, shard: 0, weightsVersion: 1, gradSum: half, gradDtype: 'float16', lossSum: 1, count: 16, computeMs: 1 });
  assert.ok(f16.length < f32.length / 2 + 200, `${f16.length} bytes against ${f32.length}`);
  const r = decodeWorkerMessage(f16);
  assert.ok(r.type === 'result' && r.gradDtype === 'float16');
  assert.equal(r.gradSum.byteLength, grad.length * bytesPerElement('float16'));
  // From an odd offset too (a frame's bytes are not aligned for 16-bit reads).
  const odd = new Uint8Array(r.gradSum.byteLength + 1);
  odd.set(r.gradSum, 1);
  const a = new Float32Array(grad.length);
  const b = new Float32Array(grad.length);
  decodeTensor(r.gradSum, 'float16', a);
  decodeTensor(odd.subarray(1), 'float16', b);
  assert.deepEqual(a, b);
  assert.ok(a.every((v, i) => Math.abs(v - grad[i]) <= Math.abs(grad[i]) * 2 ** -11 + 2 ** -25));

  const assign = decodeCoordinatorMessage(
    encodeAssign(
      { type: 'assign', step: 0, shard: 0, weightsVersion: 0, pixels: new Uint8Array(784), labels: Uint8Array.of(1), keys: Uint32Array.of(1) },
      encodeWeightsFrame(Float32Array.of(1, -2, 0.5), 'bfloat16'),
    ),
  );
  assert.ok(assign.type === 'assign' && assign.weightsDtype === 'bfloat16' && assign.weights?.byteLength === 6);
  const widened = new Float32Array(3);
  decodeTensor(assign.weights, 'bfloat16', widened);
  assert.deepEqual([...widened], [1, -2, 0.5]);
  assert.throws(() => decodeWorkerMessage(encode({ type: 'result', step: 1, shard: 0, weightsVersion: 1, gradSum: half, gradDtype: 'int8' as 'float16', lossSum: 1, count: 1, computeMs: 1 })), /unknown gradDtype/);
});

test('received weights: float32 ones are read where they arrived, without a copy; 16-bit and unaligned ones are widened into the kept buffer', () => {
  const values = Float32Array.of(1, -2, 0.5, 3.25);
  const frames = (dtype: 'float32' | 'bfloat16'): Buffer[] =>
    encodeAssign(
      { type: 'assign', step: 0, shard: 0, weightsVersion: 0, pixels: new Uint8Array(784), labels: Uint8Array.of(1), keys: Uint32Array.of(1) },
      encodeWeightsFrame(values, dtype),
    );
  const kept = new Float32Array(4);
  const f32 = decodeCoordinatorMessage(frames('float32'));
  assert.ok(f32.type === 'assign' && f32.weights);
  const view = receivedFloat32(f32.weights, 'float32', kept);
  assert.deepEqual([...view], [...values]);
  assert.equal(view.buffer, f32.weights.buffer, 'a view of the frame');
  assert.deepEqual([...kept], [0, 0, 0, 0], 'the kept buffer is not written');

  const bf16 = decodeCoordinatorMessage(frames('bfloat16'));
  assert.ok(bf16.type === 'assign' && bf16.weights);
  const widened = receivedFloat32(bf16.weights, 'bfloat16', kept);
  assert.equal(widened.buffer, kept.buffer);
  assert.deepEqual([...widened], [...values]);

  // float32 bytes off a 4-byte boundary cannot be viewed: copied.
  const odd = new Uint8Array(17);
  odd.set(new Uint8Array(values.buffer), 1);
  const into = new Float32Array(4);
  const copied = receivedFloat32(odd.subarray(1), 'float32', into);
  assert.equal(copied.buffer, into.buffer);
  assert.deepEqual([...copied], [...values]);
});

test('the reducer widens 16-bit gradients, adds them in shard order, and refuses another dtype', () => {
  const P = 1000;
  const shards = [4, 4].map((n) => ({ labels: new Uint8Array(n) }));
  const grads = [1, 2].map((seed) => rand(P, seed, -100, 100));
  const r = new Reducer(P, 'bfloat16');
  r.begin(0, shards);
  const wrong = r.accept({ type: 'result', step: 0, shard: 0, weightsVersion: 0, gradSum: bytes(grads[0]), lossSum: 1, count: 4, computeMs: 1 });
  assert.equal(wrong.kind, 'invalid');
  assert.match((wrong as { problem: string }).problem, /float32 gradient, this run's travel as bfloat16/);
  for (const [shard, g] of grads.entries()) {
    const v = r.accept({ type: 'result', step: 0, shard, weightsVersion: 0, gradSum: bytes(encodeTensor(g, 'bfloat16') as Uint16Array), gradDtype: 'bfloat16', lossSum: 1, count: 4, computeMs: 1 });
    assert.equal(v.kind, 'complete');
  }
  const out = new Float32Array(P);
  r.reduce(out);
  const expected = new Float32Array(P);
  for (const g of grads) {
    const rounded = g.slice();
    roundTrip(rounded, 'bfloat16');
    for (let i = 0; i < P; i++) expected[i] = Math.fround(expected[i] + rounded[i]);
  }
  assert.deepEqual(out, expected);
});
