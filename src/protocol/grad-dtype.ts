/**
 * What gradients and weights travel as (--grad-dtype): float32, or one of two 16-bit formats that
 * halve the bytes, as Horovod's fp16 compression does. The coordinator keeps float32 master weights
 * and momentum; a 16-bit tensor is rounded to nearest, ties to even, once on the way out, and
 * widened back to float32 (exactly) on the way in.
 *
 *   float16   IEEE 754 binary16: 11 significant bits, largest finite 65504. A value beyond it
 *             becomes ±Infinity, as a cast does in Horovod (no loss scaling): the run then stops
 *             with a line saying so rather than apply it (see the reducer's verdict).
 *   bfloat16  the upper half of a float32: 8 significant bits, float32's range, so no overflow.
 *
 * float16 values are decoded by a table of all 65 536 of them, filled by @petamoriken/float16 (a
 * well-kept library) at load; encoding is the loop below. Measured on 2 vCPU Intel Xeon (KVM),
 * Node 20, 2026-11-30, 21 840 values (the net's gradient), `node dist/bench/grad-dtype-bench.js`:
 * the library's `new Float16Array(float32s)` took 1.15 ms per gradient against 0.10 ms for the loop
 * (decoding: 6.7 ms through the library's array against 0.07 ms for the table). Encoding is on the
 * hot path twice per shard (the worker's gradient, the coordinator's weights), so the loop stays;
 * the tests check it against the library's rounding bit for bit. The coordinator widens the
 * gradients it receives with SIMD kernels instead (engine/simd/reduce.ts `widen`, tested against
 * `decodeTensor` on every pattern) where WebAssembly SIMD runs.
 */
import { getFloat16 } from '@petamoriken/float16';

export const GRAD_DTYPES = ['float32', 'float16', 'bfloat16'] as const;
export type GradDtype = (typeof GRAD_DTYPES)[number];

export function isGradDtype(v: unknown): v is GradDtype {
  return typeof v === 'string' && (GRAD_DTYPES as readonly string[]).includes(v);
}

/** Bytes of one element on the wire. */
export function bytesPerElement(dtype: GradDtype): 2 | 4 {
  return dtype === 'float32' ? 4 : 2;
}

/** Largest finite value of the dtype. */
export const FLOAT16_MAX = 65504;

/** Every float16 bit pattern's value as float32, indexed by the pattern. */
const FLOAT16_VALUES = (() => {
  const table = new Float32Array(65536);
  const view = new DataView(new ArrayBuffer(2));
  for (let bits = 0; bits < 65536; bits++) {
    view.setUint16(0, bits, true);
    table[bits] = getFloat16(view, 0, true);
  }
  return table;
})();

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);
/** 0.5 as float32 bits shifted so that adding it to a tiny value rounds it into float16's subnormal grid. */
const DENORM_MAGIC_BITS = ((127 - 15) + (23 - 10) + 1) << 23;
const DENORM_MAGIC = new Float32Array(new Uint32Array([DENORM_MAGIC_BITS]).buffer)[0];

/** float32 bits → float16 bits, round to nearest, ties to even (F. Giesen's float_to_half_fast3_rtne). */
function float16Bits(u: number): number {
  const sign = (u >>> 16) & 0x8000;
  let f = u & 0x7fffffff;
  if (f >= 0x47800000) return sign | (f > 0x7f800000 ? 0x7e00 : 0x7c00); // ≥ 65536, Infinity: Infinity; NaN stays NaN
  if (f < 0x38800000) {
    // Below float16's smallest normal: a float32 addition does the rounding to the subnormal grid.
    scratchU32[0] = f;
    scratchF32[0] = Math.fround(scratchF32[0] + DENORM_MAGIC);
    return sign | (scratchU32[0] - DENORM_MAGIC_BITS);
  }
  const mantissaOdd = (f >>> 13) & 1;
  f += ((15 - 127) << 23) + 0xfff + mantissaOdd;
  return sign | (f >>> 13); // a carry past 65504 gives 0x7c00, Infinity
}

/** float32 bits → bfloat16 bits: the upper half, rounded to nearest, ties to even. */
function bfloat16Bits(u: number): number {
  if ((u & 0x7fffffff) > 0x7f800000) return (u >>> 16) | 0x40; // NaN stays a (quiet) NaN
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 0) >>> 16;
}

/**
 * `src` in `dtype`, into `out` (grown when short; the returned array is the encoded tensor). For
 * float32 it is `src` itself: nothing is converted.
 */
export function encodeTensor(src: Float32Array, dtype: GradDtype, out?: Uint16Array): Float32Array | Uint16Array {
  if (dtype === 'float32') return src;
  const dst = out && out.length >= src.length ? out.subarray(0, src.length) : new Uint16Array(src.length);
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  if (dtype === 'float16') for (let i = 0; i < bits.length; i++) dst[i] = float16Bits(bits[i]);
  else for (let i = 0; i < bits.length; i++) dst[i] = bfloat16Bits(bits[i]);
  return dst;
}

/**
 * A received tensor as float32 values: float32 bytes at a 4-byte boundary (a received frame of its
 * own starts at one) are read where they lie, without a copy; anything else is widened into `into`
 * (decodeTensor), which is returned. A view keeps the received frame alive as long as it is held.
 */
export function receivedFloat32(bytes: Uint8Array, dtype: GradDtype, into: Float32Array): Float32Array {
  if (dtype === 'float32' && bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  decodeTensor(bytes, dtype, into);
  return into.subarray(0, bytes.byteLength / bytesPerElement(dtype));
}

/**
 * Widens a received tensor (little-endian bytes of `dtype`, any alignment) into `into` from element
 * `at` on. Every 16-bit value is exactly a float32.
 */
export function decodeTensor(bytes: Uint8Array, dtype: GradDtype, into: Float32Array, at = 0): void {
  if (dtype === 'float32') {
    new Uint8Array(into.buffer, into.byteOffset + at * 4, bytes.byteLength).set(bytes);
    return;
  }
  const n = bytes.byteLength >>> 1;
  if (dtype === 'float16') {
    for (let i = 0, j = 0; i < n; i++, j += 2) into[at + i] = FLOAT16_VALUES[bytes[j] | (bytes[j + 1] << 8)];
  } else {
    const out = new Uint32Array(into.buffer, into.byteOffset + at * 4, n);
    for (let i = 0, j = 0; i < n; i++, j += 2) out[i] = (bytes[j] << 16) | (bytes[j + 1] << 24);
  }
}

/**
 * Rounds `a` in place to the values `dtype` can hold: what a tensor becomes after a trip over the
 * wire. The single-node fallback and the coordinator's recomputation use it, so that they compute
 * and add exactly what a worker and the reducer would.
 */
export function roundTrip(a: Float32Array, dtype: GradDtype): void {
  if (dtype === 'float32') return;
  const bits = new Uint32Array(a.buffer, a.byteOffset, a.length);
  if (dtype === 'float16') for (let i = 0; i < a.length; i++) a[i] = FLOAT16_VALUES[float16Bits(bits[i])];
  else for (let i = 0; i < a.length; i++) bits[i] = bfloat16Bits(bits[i]) << 16;
}
