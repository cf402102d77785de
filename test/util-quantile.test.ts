import assert from 'node:assert/strict';
import { test } from 'node:test';
import { quantile } from '../src/util/quantile.js';

test('quantile: nearest rank, the input left as it was, NaN for no values', () => {
  const xs = [5, 1, 4, 2, 3, 10, 9, 8, 7, 6];
  assert.equal(quantile(xs, 0.5), 5);
  assert.equal(quantile(xs, 0.9), 9);
  assert.equal(quantile(xs, 0), 1);
  assert.equal(quantile(xs, 1), 10);
  assert.equal(quantile([3, 1, 2], 0.5), 2);
  assert.equal(quantile([7], 0.9), 7);
  assert.deepEqual(xs, [5, 1, 4, 2, 3, 10, 9, 8, 7, 6], 'not sorted in place');
  assert.ok(Number.isNaN(quantile([], 0.5)));
});
