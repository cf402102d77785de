/**
 * The coordinator's reduction kernels (../reduce.ts drives them): adding a shard's gradient into
 * the running sum, and checking a received gradient for ±Infinity and NaN.
 *
 * Pointers are byte offsets into the module's memory, of any alignment (wasm loads and stores need
 * none); counts are in float32 elements, any count: whole vectors first, then a scalar tail.
 * IEEE float32 addition gives the same bits in a vector lane, in a scalar f32.add and in JavaScript's
 * `Math.fround(a + b)` (wasm keeps subnormals and never fuses), so a sum made here equals, bit for
 * bit, the same additions made by the JavaScript loop: deterministic mode rests on it.
 */

// @ts-ignore: decorator
@inline function at(base: usize, index: i32): usize {
  return base + (<usize>index << 2);
}

/** acc[i] = acc[i] + g[i] for i < n, in float32. */
export function addInto(acc: usize, g: usize, n: i32): void {
  let i = 0;
  // Four vectors per turn: the loads of one do not wait on the store of the one before.
  for (; i + 16 <= n; i += 16) {
    const a = at(acc, i);
    const b = at(g, i);
    const s0 = f32x4.add(v128.load(a), v128.load(b));
    const s1 = f32x4.add(v128.load(a, 16), v128.load(b, 16));
    const s2 = f32x4.add(v128.load(a, 32), v128.load(b, 32));
    const s3 = f32x4.add(v128.load(a, 48), v128.load(b, 48));
    v128.store(a, s0);
    v128.store(a, s1, 16);
    v128.store(a, s2, 32);
    v128.store(a, s3, 48);
  }
  for (; i + 4 <= n; i += 4) v128.store(at(acc, i), f32x4.add(v128.load(at(acc, i)), v128.load(at(g, i))));
  for (; i < n; i++) store<f32>(at(acc, i), load<f32>(at(acc, i)) + load<f32>(at(g, i)));
}

/**
 * 1 when each of the n float32 values from `ptr` on is finite, else 0. A float32 is ±Infinity or
 * NaN exactly when its 8 exponent bits are all ones: tested on the bits, four lanes at a time.
 */
export function allFinite(ptr: usize, n: i32): i32 {
  const exponent = i32x4.splat(0x7f800000);
  let i = 0;
  let bad = i32x4.splat(0);
  for (; i + 16 <= n; i += 16) {
    const p = at(ptr, i);
    const e0 = i32x4.eq(v128.and(v128.load(p), exponent), exponent);
    const e1 = i32x4.eq(v128.and(v128.load(p, 16), exponent), exponent);
    const e2 = i32x4.eq(v128.and(v128.load(p, 32), exponent), exponent);
    const e3 = i32x4.eq(v128.and(v128.load(p, 48), exponent), exponent);
    bad = v128.or(bad, v128.or(v128.or(e0, e1), v128.or(e2, e3)));
  }
  for (; i + 4 <= n; i += 4) bad = v128.or(bad, i32x4.eq(v128.and(v128.load(at(ptr, i)), exponent), exponent));
  if (v128.any_true(bad)) return 0;
  for (; i < n; i++) if ((load<u32>(at(ptr, i)) & 0x7f800000) == 0x7f800000) return 0;
  return 1;
}
