/**
 * The coordinator's reduction kernels (../reduce.ts drives them): widening a gradient that travelled
 * as float16 or bfloat16, checking it for ±Infinity and NaN, and adding it into the running sum; and
 * the momentum-SGD update that follows (training/sgd.ts drives it).
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

/**
 * dst[i] = the float32 value of the bfloat16 src[i] (little-endian 16-bit words), for i < n: the
 * upper half of a float32, so the widening is a shift, exact for every pattern.
 */
export function widenBfloat16(src: usize, dst: usize, n: i32): void {
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    const h = v128.load(src + (<usize>i << 1));
    v128.store(at(dst, i), i32x4.shl(i32x4.extend_low_i16x8_u(h), 16));
    v128.store(at(dst, i), i32x4.shl(i32x4.extend_high_i16x8_u(h), 16), 16);
  }
  for (; i < n; i++) store<u32>(at(dst, i), <u32>load<u16>(src + (<usize>i << 1)) << 16);
}

/**
 * dst[i] = the float32 value of the IEEE binary16 src[i] (little-endian), for i < n: exact for
 * every finite value and ±Infinity (a NaN stays a NaN, its payload shifted along).
 *   normal:    exponent rebiased (+112), mantissa shifted up 13 bits;
 *   subnormal: its 10 mantissa bits × 2⁻²⁴, an exact float32 product (a normal float32);
 *   Inf, NaN:  exponent all ones, mantissa shifted up 13 bits.
 */
export function widenFloat16(src: usize, dst: usize, n: i32): void {
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    const h = v128.load(src + (<usize>i << 1));
    v128.store(at(dst, i), half4(i32x4.extend_low_i16x8_u(h)));
    v128.store(at(dst, i), half4(i32x4.extend_high_i16x8_u(h)), 16);
  }
  for (; i < n; i++) store<u32>(at(dst, i), half1(<u32>load<u16>(src + (<usize>i << 1))));
}

// @ts-ignore: decorator
@inline function half4(h: v128): v128 {
  const magnitude = v128.and(h, i32x4.splat(0x7fff));
  const sign = i32x4.shl(v128.and(h, i32x4.splat(0x8000)), 16);
  const shifted = i32x4.shl(magnitude, 13);
  const normal = i32x4.add(shifted, i32x4.splat(112 << 23));
  const special = i32x4.add(shifted, i32x4.splat(224 << 23));
  const subnormal = f32x4.mul(f32x4.convert_i32x4_s(magnitude), f32x4.splat(5.9604644775390625e-8)); // 2⁻²⁴
  const isSpecial = i32x4.ge_s(magnitude, i32x4.splat(0x7c00));
  const isSubnormal = i32x4.lt_s(magnitude, i32x4.splat(0x0400));
  return v128.or(sign, v128.bitselect(subnormal, v128.bitselect(special, normal, isSpecial), isSubnormal));
}

// @ts-ignore: decorator
@inline function half1(h: u32): u32 {
  const magnitude = h & 0x7fff;
  const sign = (h & 0x8000) << 16;
  if (magnitude < 0x0400) return sign | reinterpret<u32>(<f32>magnitude * <f32>5.9604644775390625e-8);
  return sign | ((magnitude << 13) + (magnitude >= 0x7c00 ? 224 << 23 : 112 << 23));
}

/**
 * One momentum-SGD update of n parameters, PyTorch's semantics (v ← μ·v + g·scale; w ← w − lr·v),
 * with the roundings of training/sgd.ts's JavaScript loop, so that the bits are the same: g·scale in
 * float64, rounded to float32; μ·v plus it in float64, rounded once to float32 (the new v); w − lr·v
 * in float64, rounded once to float32 (the new w). Two float64 lanes at a time: a float32 widened
 * to float64 is exact, a float64 multiply or add is the same IEEE operation in a lane as in
 * JavaScript, and demoting rounds to nearest, ties to even, as Math.fround does.
 */
export function sgdStep(w: usize, g: usize, v: usize, n: i32, lr: f64, momentum: f64, scale: f64): void {
  const mu = f64x2.splat(momentum);
  const s = f64x2.splat(scale);
  const rate = f64x2.splat(lr);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const gv = v128.load(at(g, i));
    const vv = v128.load(at(v, i));
    const wv = v128.load(at(w, i));
    const vLo = sgdVelocity(f64x2.promote_low_f32x4(gv), f64x2.promote_low_f32x4(vv), mu, s);
    const vHi = sgdVelocity(f64x2.promote_low_f32x4(v128.shuffle<f32>(gv, gv, 2, 3, 0, 1)), f64x2.promote_low_f32x4(v128.shuffle<f32>(vv, vv, 2, 3, 0, 1)), mu, s);
    const newV = v128.shuffle<f32>(vLo, vHi, 0, 1, 4, 5);
    const wLo = f32x4.demote_f64x2_zero(f64x2.sub(f64x2.promote_low_f32x4(wv), f64x2.mul(rate, f64x2.promote_low_f32x4(newV))));
    const wHi = f32x4.demote_f64x2_zero(
      f64x2.sub(f64x2.promote_low_f32x4(v128.shuffle<f32>(wv, wv, 2, 3, 0, 1)), f64x2.mul(rate, f64x2.promote_low_f32x4(v128.shuffle<f32>(newV, newV, 2, 3, 0, 1)))),
    );
    v128.store(at(v, i), newV);
    v128.store(at(w, i), v128.shuffle<f32>(wLo, wHi, 0, 1, 4, 5));
  }
  for (; i < n; i++) {
    const gs = <f32>(<f64>load<f32>(at(g, i)) * scale);
    const vi = <f32>(momentum * <f64>load<f32>(at(v, i)) + <f64>gs);
    store<f32>(at(v, i), vi);
    store<f32>(at(w, i), <f32>(<f64>load<f32>(at(w, i)) - lr * <f64>vi));
  }
}

/** Two lanes of the new velocity, float32 in lanes 0 and 1 (zeros above): f32(μ·v + f32(g·scale)). */
// @ts-ignore: decorator
@inline function sgdVelocity(g: v128, v: v128, mu: v128, scale: v128): v128 {
  const gs = f64x2.promote_low_f32x4(f32x4.demote_f64x2_zero(f64x2.mul(g, scale)));
  return f32x4.demote_f64x2_zero(f64x2.add(f64x2.mul(mu, v), gs));
}
