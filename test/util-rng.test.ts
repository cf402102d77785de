import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SeededRng, hash32, keyedUniform } from '../src/util/rng.js';
import { epochOrder, evenShards, fixedSizeShards, sampleKey } from '../src/training/schedule.js';

test('the same seed and stream give the same sequence; others differ', () => {
  const a = SeededRng.create(1, 7);
  const b = SeededRng.create(1, 7);
  const c = SeededRng.create(2, 7);
  const d = SeededRng.create(1, 8);
  const seqA = Array.from({ length: 5 }, () => a.nextUint32());
  assert.deepEqual(Array.from({ length: 5 }, () => b.nextUint32()), seqA);
  assert.notDeepEqual(Array.from({ length: 5 }, () => c.nextUint32()), seqA);
  assert.notDeepEqual(Array.from({ length: 5 }, () => d.nextUint32()), seqA);
});

test('state round-trips: a restored generator continues the sequence', () => {
  const a = SeededRng.create(3);
  a.nextUint32();
  const b = SeededRng.fromState(a.state());
  assert.deepEqual([a.nextUint32(), a.uniform()], [b.nextUint32(), b.uniform()]);
});

test('uniform draws look uniform', () => {
  const rng = SeededRng.create(11);
  const bins = new Array(10).fill(0);
  for (let i = 0; i < 100000; i++) bins[Math.floor(rng.uniform() * 10)]++;
  for (const b of bins) assert.ok(Math.abs(b - 10000) < 500, `bin ${b}`);
  const keyed = new Array(10).fill(0);
  for (let i = 0; i < 100000; i++) keyed[Math.floor(keyedUniform(42, 1, i) * 10)]++;
  for (const b of keyed) assert.ok(Math.abs(b - 10000) < 500, `keyed bin ${b}`);
  assert.notEqual(hash32(1, 2), hash32(2, 1));
});

test('epoch order is a permutation, fixed by (seed, epoch)', () => {
  const o1 = epochOrder(1, 1, 1000);
  assert.deepEqual([...o1].sort((x, y) => x - y), Array.from({ length: 1000 }, (_, i) => i));
  assert.deepEqual(epochOrder(1, 1, 1000), o1);
  assert.notDeepEqual(epochOrder(1, 2, 1000), o1);
  assert.notDeepEqual(epochOrder(2, 1, 1000), o1);
  assert.equal(sampleKey(1, 1, 5), sampleKey(1, 1, 5));
  assert.notEqual(sampleKey(1, 1, 5), sampleKey(1, 2, 5));
});

test('shards cover the batch exactly', () => {
  assert.deepEqual(fixedSizeShards(40, 16), [[0, 16], [16, 32], [32, 40]]);
  assert.deepEqual(evenShards(64, 3), [[0, 21], [21, 42], [42, 64]]);
  assert.deepEqual(evenShards(2, 4), [[0, 1], [1, 2]]);
});
