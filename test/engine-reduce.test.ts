/**
 * The reduction kernels (src/engine/simd/assembly/reduce.ts) and the arena that drives them
 * (src/engine/simd/reduce.ts), against plain JavaScript float32 arithmetic: sums bit for bit on
 * awkward values (subnormals, signed zeros, sums that overflow) at every length and alignment, and
 * the finiteness check catching ±Infinity and NaN wherever they sit, and 16-bit gradients widened to
 * the values the protocol's decoder gives, for every one of the 65 536 patterns.
 */
import assert from 'node:assert/strict';
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { instantiateSimd, simdAvailable } from '../src/engine/simd/module.js';
import { ReductionArena } from '../src/engine/simd/reduce.js';
import { decodeTensor } from '../src/protocol/grad-dtype.js';
import { rand, tempDir } from './helpers.js';

const LENGTHS = [0, 1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 19, 31, 32, 33, 63, 1001, 21840];
const NON_FINITE = [Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, Number.NaN];

const bitsOf = (a: Float32Array): Uint32Array => new Uint32Array(a.buffer, a.byteOffset, a.length);

/** A seeded stream of 32-bit words (mulberry32). */
function words(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/**
 * n finite float32s of every kind: any bit pattern but the non-finite ones (subnormals and huge
 * values included), signed zeros, the smallest subnormals and the largest finite values (whose
 * sums overflow to ±Infinity), and ordinary gradients.
 */
function awkward(n: number, seed: number): Float32Array {
  const next = words(seed);
  const out = new Float32Array(n);
  const bits = bitsOf(out);
  const specials = [0x00000000, 0x80000000, 0x00000001, 0x80000001, 0x007fffff, 0x807fffff, 0x7f7fffff, 0xff7fffff, 0x00800000];
  const ordinary = rand(n, seed, -1, 1);
  for (let i = 0; i < n; i++) {
    const kind = next() % 4;
    if (kind === 0) {
      let w = next();
      if ((w & 0x7f800000) === 0x7f800000) w ^= 0x00800000; // a finite pattern
      bits[i] = w;
    } else if (kind === 1) bits[i] = specials[next() % specials.length];
    else if (kind === 2) bits[i] = (next() & 0x807fffff) >>> 0; // a subnormal or a zero
    else out[i] = ordinary[i];
  }
  return out;
}

/** acc + g, one float32 addition per element: the reference. */
function referenceSum(acc: Float32Array, g: Float32Array): Float32Array {
  return acc.map((a, i) => Math.fround(a + g[i]));
}

test('WebAssembly SIMD runs here, so the arena uses the kernels by default', () => {
  assert.equal(simdAvailable(), true);
  assert.equal(new ReductionArena(10).simd, true);
  assert.equal(new ReductionArena(10, { simd: false }).simd, false);
});

test('addInto: bit for bit the float32 sum of JavaScript, at every length and any alignment', () => {
  const { kernels, memory } = instantiateSimd(0);
  const base = Math.ceil(kernels.heapBase() / 64) * 64;
  const longest = Math.max(...LENGTHS);
  const need = base + 2 * (longest + 8) * 4 + 64;
  memory.grow(Math.ceil((need - memory.buffer.byteLength) / 65536));
  for (const n of LENGTHS) {
    for (const [accShift, gShift] of [[0, 0], [1, 0], [0, 3], [2, 1], [3, 3]]) {
      const acc = awkward(n, n * 7 + accShift);
      const g = awkward(n, n * 13 + gShift + 1000);
      const accAt = base + accShift * 4;
      const gAt = base + (longest + 8) * 4 + gShift * 4;
      new Float32Array(memory.buffer, accAt, n).set(acc);
      new Float32Array(memory.buffer, gAt, n).set(g);
      kernels.addInto(accAt, gAt, n);
      const got = new Float32Array(memory.buffer, accAt, n);
      assert.deepEqual(bitsOf(got), bitsOf(referenceSum(acc, g)), `n = ${n}, acc at +${accShift}, g at +${gShift} floats`);
    }
  }
});

test('addInto keeps the signs of zeros and subnormals, and overflows to ±Infinity as JavaScript does', () => {
  const arena = new ReductionArena(8);
  arena.reserve(1);
  const acc = new Float32Array([-0, -0, 0, 1.4e-45, -1.4e-45, 3.4028234663852886e38, -3.4028234663852886e38, 5.877471754111438e-39]);
  const g = new Float32Array([-0, 0, -0, 1.4e-45, 1.4e-45, 3.4028234663852886e38, -3.4028234663852886e38, -5.877471754111438e-39]);
  arena.sum.set(acc);
  arena.slot(0).set(g);
  arena.addSlot(0);
  assert.deepEqual([...arena.sum], [-0, 0, 0, Math.fround(2.8e-45), 0, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 0]);
  assert.ok(Object.is(arena.sum[0], -0) && Object.is(arena.sum[1], 0) && Object.is(arena.sum[4], 0), 'signed zeros as IEEE adds them');
  assert.deepEqual(bitsOf(arena.sum), bitsOf(referenceSum(acc, g)));
});

test('allFinite: ±Infinity and NaN caught at every position modulo 4, in the vector body and in the tail', () => {
  const arena = new ReductionArena(1001);
  arena.reserve(1);
  const slot = arena.slot(0);
  for (const n of LENGTHS.filter((n) => n <= 1001)) {
    const clean = awkward(n, n + 3);
    slot.set(clean);
    assert.equal(arena.allFinite(slot, 0, n), true, `n = ${n}: finite values, subnormals and extremes included`);
    // Every position of short lengths; for the longer ones, a window at the start and at the end.
    const positions = n <= 40 ? [...Array(n).keys()] : [...Array(20).keys(), ...Array.from({ length: 20 }, (_, k) => n - 20 + k)];
    for (const at of positions) {
      for (const bad of NON_FINITE) {
        slot[at] = bad;
        assert.equal(arena.allFinite(slot, 0, n), false, `n = ${n}: ${bad} at ${at}`);
        slot[at] = clean[at];
      }
    }
    assert.equal(arena.allFinite(slot, 0, n), true);
  }
});

test('allFinite looks only at [from, end), whatever its alignment', () => {
  const arena = new ReductionArena(64);
  arena.reserve(1);
  const slot = arena.slot(0);
  slot.set(rand(64, 5));
  for (let from = 0; from < 8; from++) {
    for (let end = from; end <= 64; end += 5) {
      slot[from > 0 ? from - 1 : 63] = Number.NaN; // just before the range (or far after it)
      if (end < 64) slot[end] = Number.POSITIVE_INFINITY; // just after it
      assert.equal(arena.allFinite(slot, from, end), true, `[${from}, ${end}) holds only finite values`);
      if (end > from) {
        slot[end - 1] = Number.NEGATIVE_INFINITY;
        assert.equal(arena.allFinite(slot, from, end), false, `[${from}, ${end}): its last value`);
      }
      slot.set(rand(64, 5));
    }
  }
  assert.throws(() => arena.allFinite(slot, 0, 65), /outside a view of 64 floats/);
  // An array of its own (not in the arena) is checked too.
  assert.equal(arena.allFinite(new Float32Array([1, Number.NaN]), 0, 2), false);
});

test('the arena: slots kept when it grows, shard-ordered sums equal with and without the kernels', () => {
  const params = 21840 + 3;
  const grads = [1, 2, 3, 4, 5].map((seed) => awkward(params, seed * 101));
  const sums: Uint32Array[] = [];
  for (const simd of [true, false]) {
    const arena = new ReductionArena(params, { simd });
    arena.reserve(2);
    arena.slot(0).set(grads[0]);
    arena.slot(1).set(grads[1]);
    const before = arena.slot(0);
    arena.reserve(5); // the memory grows (64 KiB pages): views handed out before are stale
    if (simd) assert.equal(before.length, 0, 'the old view is detached');
    assert.deepEqual(bitsOf(arena.slot(0)), bitsOf(grads[0]), 'what the slots held is still there');
    assert.deepEqual(bitsOf(arena.slot(1)), bitsOf(grads[1]));
    for (let i = 2; i < 5; i++) arena.slot(i).set(grads[i]);
    arena.sumSlots(5);
    let expected: Float32Array = new Float32Array(params);
    for (const g of grads) expected = referenceSum(expected, g);
    assert.deepEqual(bitsOf(arena.sum), bitsOf(expected), `simd ${simd}: ((0 + g₀) + g₁) + … in float32`);
    sums.push(Uint32Array.from(bitsOf(arena.sum)));
    assert.equal(arena.slots, 5);
  }
  assert.deepEqual(sums[0], sums[1]);
});

test('more slots than the memory may hold: the arena goes on with the JavaScript loops, keeping what the slots held', () => {
  const params = 10000; // 40 KB a buffer: 1 MiB holds the sum and about 25 slots
  const grads = Array.from({ length: 40 }, (_, i) => awkward(params, 300 + i));
  const arena = new ReductionArena(params, { maxBytes: 1 << 20 });
  arena.reserve(3);
  assert.equal(arena.simd, true);
  for (let i = 0; i < 3; i++) arena.slot(i).set(grads[i]);
  arena.reserve(40);
  assert.equal(arena.simd, false, 'past the memory\'s maximum');
  for (let i = 0; i < 3; i++) assert.deepEqual(bitsOf(arena.slot(i)), bitsOf(grads[i]), `slot ${i} kept`);
  for (let i = 3; i < 40; i++) arena.slot(i).set(grads[i]);
  arena.sumSlots(40);
  let expected: Float32Array = new Float32Array(params);
  for (const g of grads) expected = referenceSum(expected, g);
  assert.deepEqual(bitsOf(arena.sum), bitsOf(expected));
  const bad = arena.slot(39);
  bad[params - 2] = Number.NaN;
  assert.equal(arena.allFinite(bad, 0, params), false);
  assert.equal(arena.allFinite(bad, 0, params - 2), true);
});

test('widen: every float16 and bfloat16 pattern to the float32 the protocol decodes, at any alignment and offset', () => {
  const patterns = Uint16Array.from({ length: 65536 }, (_, i) => i);
  const arena = new ReductionArena(65536 + 9);
  arena.reserve(2);
  for (const format of ['float16', 'bfloat16'] as const) {
    for (const [byteShift, at] of [[0, 0], [1, 9], [3, 5], [2, 1]]) {
      // A received frame need not be aligned: the patterns from an odd byte on.
      const frame = new Uint8Array(patterns.byteLength + byteShift).subarray(byteShift);
      frame.set(new Uint8Array(patterns.buffer));
      const expected = new Float32Array(65536);
      decodeTensor(frame, format, expected);
      const slot = arena.slot(1);
      slot.fill(7);
      arena.widen(1, frame, format, at);
      assert.ok(slot.subarray(0, at).every((v) => v === 7), 'nothing written before `at`');
      const got = slot.subarray(at, at + 65536);
      const gotBits = bitsOf(got);
      const expectedBits = bitsOf(expected);
      for (let h = 0; h < 65536; h++) {
        if (Number.isNaN(expected[h])) assert.ok(Number.isNaN(got[h]), `${format} 0x${h.toString(16)}: NaN`);
        else if (gotBits[h] !== expectedBits[h]) assert.fail(`${format} 0x${h.toString(16)} at +${byteShift} bytes: 0x${gotBits[h].toString(16)}, expected 0x${expectedBits[h].toString(16)} (${expected[h]})`);
      }
    }
    // Short runs: the scalar tail alone, and a vector plus a tail.
    for (const n of [1, 3, 7, 8, 9, 15]) {
      const frame = new Uint8Array(patterns.buffer, 2 * 0x3bf0, 2 * n);
      const expected = new Float32Array(n);
      decodeTensor(frame, format, expected);
      arena.widen(0, frame, format, 2);
      assert.deepEqual(bitsOf(arena.slot(0).subarray(2, 2 + n)), bitsOf(expected), `${format}, ${n} values`);
    }
  }
  assert.throws(() => arena.widen(0, new Uint8Array(20), 'float16', 65536), /outside a slot/);
  assert.throws(() => new ReductionArena(4, { simd: false }).widen(0, new Uint8Array(2), 'float16', 0), /needs the SIMD kernels/);
});

test('a kernels.wasm that lacks a kernel (built from older sources) is not used: SIMD counts as unavailable', async () => {
  const dir = tempDir();
  const built = fileURLToPath(new URL('../src/engine/simd/', import.meta.url));
  copyFileSync(join(built, 'module.js'), join(dir, 'module.js'));
  // A valid module that exports nothing.
  writeFileSync(join(dir, 'kernels.wasm'), Uint8Array.of(0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00));
  const stale = (await import(pathToFileURL(join(dir, 'module.js')).href)) as typeof import('../src/engine/simd/module.js');
  assert.equal(stale.simdAvailable(), false);
  const dir2 = tempDir();
  copyFileSync(join(built, 'module.js'), join(dir2, 'module.js'));
  copyFileSync(join(built, 'kernels.wasm'), join(dir2, 'kernels.wasm'));
  const whole = (await import(pathToFileURL(join(dir2, 'module.js')).href)) as typeof import('../src/engine/simd/module.js');
  assert.equal(whole.simdAvailable(), true, 'the built kernels have every export');
});
