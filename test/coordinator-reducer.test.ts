/**
 * Results in, driven as a plain object: checks, parts put together tail first, the shard-ordered
 * sum, the first valid result winning over any later copy, and the non-finite verdict.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Reducer } from '../src/coordinator/reducer.js';
import { decodeTensor, encodeTensor } from '../src/protocol/grad-dtype.js';
import type { ReceivedResult } from '../src/protocol/messages.js';
import { rand } from './helpers.js';

const P = 1000;
/** Shards of 4, 4 and 2 samples (only their label counts matter here). */
const SHARDS = [4, 4, 2].map((n) => ({ labels: new Uint8Array(n) }));

const bytes = (a: Float32Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

function result(step: number, shard: number, grad: Float32Array, extra: Partial<ReceivedResult> = {}): ReceivedResult {
  return { type: 'result', step, shard, weightsVersion: step, gradSum: bytes(grad), lossSum: shard + 0.5, count: SHARDS[shard].labels.length, computeMs: 1, ...extra };
}

/** ((0 + g₀) + g₁) + … in float32, one addition at a time. */
function shardOrderSum(grads: Float32Array[]): Float32Array {
  const out = new Float32Array(P);
  for (const g of grads) for (let i = 0; i < P; i++) out[i] = Math.fround(out[i] + g[i]);
  return out;
}

test('every shard in, in any order of arrival: the sum in shard order, the losses and counts', () => {
  const grads = [1, 2, 3].map((seed) => rand(P, seed, -1e3, 1e3));
  const r = new Reducer(P);
  r.begin(7, SHARDS);
  assert.equal(r.outstanding, 3);
  for (const shard of [2, 0, 1]) assert.deepEqual(r.accept(result(7, shard, grads[shard])), { kind: 'complete' });
  assert.equal(r.outstanding, 0);
  const out = new Float32Array(P).fill(9);
  assert.deepEqual(r.reduce(out), { lossSum: 0.5 + 1.5 + 2.5, count: 10 });
  assert.deepEqual(out, shardOrderSum(grads), 'bit for bit the shard-ordered float32 sum');
});

test('a gradient in parts, tail first, is put together; a part that does not end where the last began is invalid', () => {
  const g = rand(P, 4);
  const r = new Reducer(P);
  r.begin(0, SHARDS.slice(0, 1));
  assert.deepEqual(r.accept(result(0, 0, g.subarray(600), { from: 600 })), { kind: 'part' });
  assert.deepEqual(r.accept(result(0, 0, g.subarray(200, 600), { from: 200 })), { kind: 'part' });
  assert.deepEqual(r.accept(result(0, 0, g.subarray(0, 100), { from: 0 })), { kind: 'invalid', problem: 'gradient part [0, 100), expected one ending at 200' });
  assert.deepEqual(r.accept(result(0, 0, g.subarray(0, 200), { from: 0 })), { kind: 'complete' });
  const out = new Float32Array(P);
  r.reduce(out);
  assert.deepEqual(out, shardOrderSum([g]));
});

test('malformed results for their shard: weights version, length, count', () => {
  const r = new Reducer(P);
  r.begin(3, SHARDS);
  const g = rand(P, 5);
  assert.deepEqual(r.accept(result(3, 0, g, { weightsVersion: 2 })), { kind: 'invalid', problem: 'computed on weights v2, expected v3' });
  assert.deepEqual(r.accept(result(3, 0, new Float32Array(7))), { kind: 'invalid', problem: 'gradient part [0, 7), expected one ending at 1000' });
  assert.deepEqual(r.accept(result(3, 0, new Float32Array(0))), { kind: 'invalid', problem: 'gradient part [0, 0), expected one ending at 1000' });
  assert.deepEqual(r.accept(result(3, 1, g, { count: 5 })), { kind: 'invalid', problem: 'counts 5 samples, the shard has 4' });
  assert.equal(r.outstanding, 3, 'none counted');
});

test('the first valid result wins: a later copy of a shard that is in is a duplicate, whatever it holds', () => {
  const g = rand(P, 6);
  const r = new Reducer(P);
  r.begin(1, SHARDS.slice(0, 2));
  assert.deepEqual(r.accept(result(1, 0, g)), { kind: 'complete' });
  // The same again, then garbage of the right shape, then a malformed one: all ignored, none held against the sender.
  assert.deepEqual(r.accept(result(1, 0, g)), { kind: 'duplicate' });
  assert.deepEqual(r.accept(result(1, 0, new Float32Array(P).fill(50), { lossSum: 50 })), { kind: 'duplicate' });
  assert.deepEqual(r.accept(result(1, 0, new Float32Array(3), { count: 99 })), { kind: 'duplicate' });
  assert.equal(r.outstanding, 1, 'counted once');
  assert.deepEqual(r.accept(result(1, 1, g)), { kind: 'complete' });
  const out = new Float32Array(P);
  assert.deepEqual(r.reduce(out), { lossSum: 0.5 + 1.5, count: 8 });
  assert.deepEqual(out, shardOrderSum([g, g]), 'the copies changed nothing');
});

test('a copy of a part already in is a duplicate; a part overlapping it is invalid', () => {
  const g = rand(P, 7);
  const r = new Reducer(P);
  r.begin(0, SHARDS.slice(0, 1));
  assert.equal(r.accept(result(0, 0, g.subarray(500), { from: 500 })).kind, 'part');
  assert.equal(r.accept(result(0, 0, new Float32Array(500).fill(50), { from: 500 })).kind, 'duplicate');
  assert.equal(r.accept(result(0, 0, g.subarray(700, 800), { from: 700 })).kind, 'duplicate');
  assert.deepEqual(r.accept(result(0, 0, g.subarray(400, 900), { from: 400 })), { kind: 'invalid', problem: 'gradient part [400, 900), expected one ending at 500' });
  assert.equal(r.accept(result(0, 0, g.subarray(0, 500), { from: 0 })).kind, 'complete');
  const out = new Float32Array(P);
  r.reduce(out);
  assert.deepEqual(out, g, 'the tail is the first part received, not its copy');
});

test('a non-finite result waits for the recomputation; its verdict names a diverged model or a faulty sender', () => {
  const r = new Reducer(P);
  r.begin(4, SHARDS);
  const bad = rand(P, 8);
  bad[321] = Number.POSITIVE_INFINITY;
  assert.deepEqual(r.accept(result(4, 1, bad)), { kind: 'verify' });
  assert.deepEqual(r.accept(result(4, 1, bad)), { kind: 'duplicate' }, 'one recomputation per shard, not one per copy');
  assert.deepEqual(r.accept(result(4, 2, rand(P, 9), { lossSum: Number.NaN })), { kind: 'verify' }, 'a non-finite loss too');
  assert.equal(r.outstanding, 3);
  assert.deepEqual(r.judge(4, 1, true), {
    kind: 'diverged',
    message: 'training diverged at step 4: non-finite gradients for shard 1 (try a lower --lr)',
    error: 'non-finite gradient for shard 1 of step 4: the model diverged',
  });
  assert.deepEqual(r.judge(4, 1, false), {
    kind: 'faulty',
    reason: 'sent a non-finite gradient that recomputation does not reproduce',
    error: 'non-finite gradient for shard 1 of step 4',
  });
  // The faulty sender's shard goes to another member: a fresh result is taken.
  r.reopen(1);
  const good = rand(P, 10);
  assert.deepEqual(r.accept(result(4, 1, good)), { kind: 'complete' });
});

test('reopening drops the parts of an earlier assignee; a shard that is in stays in', () => {
  const g = rand(P, 11);
  const r = new Reducer(P);
  r.begin(0, SHARDS.slice(0, 2));
  assert.equal(r.accept(result(0, 0, new Float32Array(100).fill(50), { from: 900 })).kind, 'part');
  r.reopen(0);
  assert.equal(r.accept(result(0, 0, g)).kind, 'complete', 'a whole gradient from the new assignee');
  r.reopen(0);
  assert.equal(r.outstanding, 1);
  assert.equal(r.accept(result(0, 0, g)).kind, 'duplicate');
});

test('slots are reused from step to step, emptied by each new step', () => {
  const r = new Reducer(P);
  r.begin(0, SHARDS);
  for (let s = 0; s < 3; s++) r.accept(result(0, s, rand(P, 20 + s)));
  assert.equal(r.outstanding, 0);
  r.begin(1, SHARDS.slice(0, 2));
  assert.equal(r.outstanding, 2);
  const grads = [rand(P, 30), rand(P, 31)];
  assert.equal(r.accept(result(1, 0, grads[0])).kind, 'complete', 'last step\'s shard 0 is not this step\'s');
  assert.equal(r.accept(result(1, 1, grads[1])).kind, 'complete');
  const out = new Float32Array(P);
  assert.deepEqual(r.reduce(out), { lossSum: 0.5 + 1.5, count: 8 }, 'only this step\'s shards');
  assert.deepEqual(out, shardOrderSum(grads));
});

test('a spot check found false: the recomputation replaces the result; a retracted shard is open again and counted once', () => {
  const grads = [1, 2, 3].map((seed) => rand(P, seed));
  const r = new Reducer(P);
  r.begin(3, SHARDS);
  for (const shard of [0, 1, 2]) r.accept(result(3, shard, shard === 1 ? new Float32Array(P).fill(50) : grads[shard]));
  assert.equal(r.outstanding, 0);
  r.replace(1, grads[1], 1.5);
  r.retract(2);
  assert.equal(r.outstanding, 1, 'the retracted shard is awaited again');
  assert.deepEqual(r.accept(result(3, 2, grads[2])), { kind: 'complete' }, 'its new result is welcome');
  r.retract(2);
  r.retract(2);
  assert.equal(r.outstanding, 1, 'retracting twice counts once');
  r.accept(result(3, 2, grads[2]));
  const out = new Float32Array(P);
  assert.deepEqual(r.reduce(out), { lossSum: 0.5 + 1.5 + 2.5, count: 10 });
  assert.deepEqual(out, shardOrderSum(grads), 'the same bits as honest results');
});

test('each shard is added as soon as those before it are in; the bits match the sum at the end', () => {
  const grads = [1, 2, 3].map((seed) => rand(P, 40 + seed, -1e3, 1e3));
  const r = new Reducer(P);
  const out = new Float32Array(P).fill(9);
  r.begin(5, SHARDS);
  // Shard 1 first: shard 0 is missing, so nothing can be added yet.
  assert.equal(r.accept(result(5, 1, grads[1])).kind, 'complete');
  assert.equal(r.summedShards, 0, 'nothing added before shard 0 is in');
  // Shard 0 next: shards 0 and 1 are added at once, before shard 2 is in.
  assert.equal(r.accept(result(5, 0, grads[0])).kind, 'complete');
  assert.equal(r.summedShards, 2, 'shards 0 and 1 added as soon as both were in');
  // A non-finite result is never added; its replacement is.
  const bad = rand(P, 44);
  bad[17] = Number.NaN;
  assert.equal(r.accept(result(5, 2, bad)).kind, 'verify');
  assert.equal(r.summedShards, 2, 'the non-finite result left the sum alone');
  assert.ok(out.every((x) => x === 9), 'the output is written by reduce only');
  r.reopen(2);
  assert.equal(r.accept(result(5, 2, grads[2])).kind, 'complete');
  assert.equal(r.summedShards, 3);
  assert.deepEqual(r.reduce(out), { lossSum: 0.5 + 1.5 + 2.5, count: 10 });
  assert.deepEqual(out, shardOrderSum(grads), 'bit for bit the shard-ordered float32 sum');
  // The next step starts its sum afresh.
  r.begin(6, SHARDS.slice(0, 2));
  assert.equal(r.summedShards, 0);
  assert.equal(r.accept(result(6, 0, grads[2])).kind, 'complete');
  assert.equal(r.accept(result(6, 1, grads[0])).kind, 'complete');
  r.reduce(out);
  assert.deepEqual(out, shardOrderSum([grads[2], grads[0]]));
});

test('a spot check that replaces or retracts a result already in the running sum: the sum is made again, the bits of honest results', () => {
  const grads = [1, 2, 3].map((seed) => rand(P, 50 + seed, -1e3, 1e3));
  const r = new Reducer(P);
  const out = new Float32Array(P);
  r.begin(8, SHARDS);
  for (const shard of [0, 1, 2]) r.accept(result(8, shard, shard === 1 ? new Float32Array(P).fill(50) : grads[shard]));
  assert.equal(r.summedShards, 3, 'the false result was summed as it came in');
  r.replace(1, grads[1], 1.5);
  assert.equal(r.summedShards, 0, 'replacing a summed shard starts the sum again');
  r.retract(2);
  r.accept(result(8, 2, grads[2]));
  assert.deepEqual(r.reduce(out), { lossSum: 0.5 + 1.5 + 2.5, count: 10 });
  assert.deepEqual(out, shardOrderSum(grads), 'the replaced result, not the false one');
});

test('the reduction on the SIMD kernels and on the JavaScript loops: the same verdicts, the same bits', () => {
  const grads = [1, 2, 3].map((seed) => rand(P, 60 + seed, -1e3, 1e3));
  const sums: Float32Array[] = [];
  for (const simd of [true, false]) {
    const r = new Reducer(P, 'float32', { simd });
    assert.equal(r.simd, simd);
    r.begin(9, SHARDS);
    const bad = Float32Array.from(grads[0]);
    bad[P - 1] = Number.NEGATIVE_INFINITY; // in the tail past the last whole vector of 16
    assert.deepEqual(r.accept(result(9, 0, bad)), { kind: 'verify' });
    r.reopen(0);
    assert.equal(r.accept(result(9, 2, grads[2].subarray(501), { from: 501 })).kind, 'part');
    assert.equal(r.accept(result(9, 2, grads[2].subarray(0, 501), { from: 0 })).kind, 'complete');
    assert.equal(r.accept(result(9, 1, grads[1])).kind, 'complete');
    assert.equal(r.accept(result(9, 0, grads[0])).kind, 'complete');
    const out = new Float32Array(P);
    r.reduce(out);
    assert.deepEqual(out, shardOrderSum(grads));
    sums.push(out);
  }
  assert.deepEqual(new Uint32Array(sums[0].buffer), new Uint32Array(sums[1].buffer));
});

test('16-bit gradients, in parts, widened by the kernels or by the decoder: the same verdicts, the same bits', () => {
  for (const dtype of ['float16', 'bfloat16'] as const) {
    const grads = [1, 2, 3].map((seed) => encodeTensor(rand(P, 70 + seed, -100, 100), dtype) as Uint16Array);
    const sums: Float32Array[] = [];
    for (const simd of [true, false]) {
      const r = new Reducer(P, dtype, { simd });
      r.begin(2, SHARDS);
      const half = (shard: number, from = 0, end = P): ReceivedResult =>
        result(2, shard, new Float32Array(0), { gradSum: new Uint8Array(grads[shard].buffer, from * 2, (end - from) * 2), gradDtype: dtype, from });
      const overflow = Uint16Array.from(grads[1]);
      overflow[P - 3] = dtype === 'float16' ? 0x7c00 : 0x7f80; // +Infinity, in the tail
      assert.deepEqual(r.accept({ ...half(1), gradSum: new Uint8Array(overflow.buffer) }), { kind: 'verify' }, `${dtype}: Infinity caught`);
      r.reopen(1);
      assert.equal(r.accept(half(2, 333)).kind, 'part');
      assert.equal(r.accept(half(2, 0, 333)).kind, 'complete');
      assert.equal(r.accept(half(0)).kind, 'complete');
      assert.equal(r.accept(half(1)).kind, 'complete');
      const out = new Float32Array(P);
      r.reduce(out);
      const widened = grads.map((g) => {
        const f = new Float32Array(P);
        decodeTensor(new Uint8Array(g.buffer), dtype, f);
        return f;
      });
      assert.deepEqual(out, shardOrderSum(widened), `${dtype}, simd ${simd}`);
      sums.push(out);
    }
    assert.deepEqual(new Uint32Array(sums[0].buffer), new Uint32Array(sums[1].buffer));
  }
});
