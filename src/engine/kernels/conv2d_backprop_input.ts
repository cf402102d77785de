/**
 * Conv2DBackpropInput for the wasm backend, replacing its built-in one (a plain C++ loop,
 * ~3x slower than XNNPACK's convolution on net's conv2 at batch 64).
 *
 * The input gradient of a convolution is itself a convolution: with the filter rotated
 * 180° and its in/out channels swapped, W'[r,c,co,ci] = W[kh−1−r, kw−1−c, ci, co],
 *   stride 1:  dx = conv(dy, W') with padding (kh−1−top, kh−1−bottom, kw−1−left, kw−1−right),
 *   stride s:  dx = conv(D(dy), W') 'valid', where D(dy) spreads dy's pixels s apart
 *              (zeros between) inside a zero frame of kh−1−top rows / kw−1−left columns.
 * Both run on the wasm backend's own Conv2D kernel (XNNPACK). Cases outside that (NCHW,
 * non-float32, a padding larger than the filter) go to the original wasm kernel.
 */
import { backend_util } from '@tensorflow/tfjs-core';
import type { Conv2DBackpropInputAttrs, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';
import { alloc, callWasmKernel, f32, input, sameShape, type KernelArgs, type WasmBackend } from './wasm_util.js';

const NAME = 'Conv2DBackpropInput';

export const conv2DBackpropInputOptions = {
  /**
   * Stride-1 method: 'col2im' = dy·Wᵀ as one matMul, then the patches scattered back in JS;
   * 'conv' = convolution with the rotated filter; 'auto' picks by measured speed.
   */
  method: 'auto' as 'auto' | 'col2im' | 'conv',
  /**
   * Use the zero-spreading path for strides > 1 (false: they go to the original kernel).
   * It does s² times the useful multiply-adds, yet still beats the built-in loop ~3x
   * (bench/kernels-bench.ts --all).
   */
  stridedViaConv: true,
};

/** W [kh,kw,ci,co] → W' [kh,kw,co,ci] rotated 180° in space, written to dst. */
export function rotateSwapFilter(w: Float32Array, dst: Float32Array, kh: number, kw: number, ci: number, co: number): void {
  for (let r = 0; r < kh; r++) {
    for (let c = 0; c < kw; c++) {
      const src = ((kh - 1 - r) * kw + (kw - 1 - c)) * ci * co;
      const out = (r * kw + c) * co * ci;
      for (let i = 0; i < ci; i++) {
        for (let o = 0; o < co; o++) dst[out + o * ci + i] = w[src + i * co + o];
      }
    }
  }
}

export function makeConv2DBackpropInputWasm(original: KernelFunc | undefined): KernelFunc {
  const fallback = (args: KernelArgs, why: string): TensorInfo => {
    if (original === undefined) throw new Error(`${NAME} (wasm): unsupported case (${why}) and no built-in kernel`);
    return original(args) as TensorInfo;
  };

  return (args: KernelArgs): TensorInfo => {
    const backend = args.backend as WasmBackend;
    const dy = input(args.inputs, 'dy', NAME);
    const filter = input(args.inputs, 'filter', NAME);
    const { strides, pad, dataFormat, dimRoundingMode, inputShape } = (args.attrs ??
      {}) as unknown as Conv2DBackpropInputAttrs;
    if (dataFormat === 'NCHW') return fallback(args, 'NCHW');
    if (dy.dtype !== 'float32' || filter.dtype !== 'float32') return fallback(args, 'dtype');
    if (dy.shape.length !== 4 || filter.shape.length !== 4 || inputShape.length !== 4) return fallback(args, 'rank');

    const info = backend_util.computeConv2DInfo(
      inputShape,
      filter.shape as [number, number, number, number],
      strides,
      1,
      pad,
      dimRoundingMode,
      false,
      'channelsLast',
    );
    if (!sameShape(dy.shape, info.outShape)) return fallback(args, 'dy shape');
    const { batchSize: N, inHeight: H, inWidth: W, inChannels: cin, outChannels: cout } = info;
    const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw } = info;
    const { outHeight: OH, outWidth: OW } = info;
    const { top, bottom, left, right } = info.padInfo;
    if (N * H * W * cin === 0 || OH * OW * cout === 0) return fallback(args, 'empty');

    const fTop = kh - 1 - top;
    const fLeft = kw - 1 - left;
    if (fTop < 0 || fLeft < 0) return fallback(args, 'padding larger than the filter');

    if (sh === 1 && sw === 1) {
      const method = conv2DBackpropInputOptions.method;
      if (method === 'col2im' || (method === 'auto' && cin > 1)) {
        return matMulCol2Im(backend, dy, filter, info, inputShape);
      }
      const fBottom = kh - 1 - bottom;
      const fRight = kw - 1 - right;
      if (fBottom < 0 || fRight < 0) return fallback(args, 'padding larger than the filter');
      return convWithRotatedFilter(backend, dy, filter, [
        [0, 0],
        [fTop, fBottom],
        [fLeft, fRight],
        [0, 0],
      ], inputShape);
    }

    if (!conv2DBackpropInputOptions.stridedViaConv) return fallback(args, 'stride > 1');
    // Spread dy into D of shape [N, H+kh−1, W+kw−1, cout]: dy[n,oy,ox] → D[n, fTop+oy·sh, fLeft+ox·sw].
    const HD = H + kh - 1;
    const WD = W + kw - 1;
    if (fTop + (OH - 1) * sh >= HD || fLeft + (OW - 1) * sw >= WD) return fallback(args, 'geometry');
    const spread = alloc(backend, [N, HD, WD, cout]);
    try {
      const d = f32(backend, spread);
      const src = f32(backend, dy);
      d.fill(0);
      for (let n = 0; n < N; n++) {
        for (let oy = 0; oy < OH; oy++) {
          const rowIn = ((n * OH + oy) * OW) * cout;
          const rowOut = ((n * HD + fTop + oy * sh) * WD + fLeft) * cout;
          for (let ox = 0; ox < OW; ox++) {
            const s = rowIn + ox * cout;
            d.set(src.subarray(s, s + cout), rowOut + ox * sw * cout);
          }
        }
      }
      return convWithRotatedFilter(backend, spread, filter, 'valid', inputShape);
    } finally {
      backend.disposeData(spread.dataId);
    }
  };
}

function convWithRotatedFilter(
  backend: WasmBackend,
  x: TensorInfo,
  filter: TensorInfo,
  pad: 'valid' | [[number, number], [number, number], [number, number], [number, number]],
  expectShape: readonly number[],
): TensorInfo {
  const [kh, kw, ci, co] = filter.shape as [number, number, number, number];
  // A fresh filter tensor every call: XNNPACK caches the packed filter by data id, and
  // disposing it below also frees that cached operator.
  const wT = alloc(backend, [kh, kw, co, ci]);
  let out: TensorInfo;
  try {
    rotateSwapFilter(f32(backend, filter), f32(backend, wT), kh, kw, ci, co);
    out = callWasmKernel('Conv2D', backend, { x, filter: wT }, {
      strides: [1, 1],
      pad,
      dataFormat: 'NHWC',
      dilations: [1, 1],
    });
  } finally {
    backend.disposeData(wT.dataId);
  }
  if (!sameShape(out.shape, expectShape)) {
    backend.disposeData(out.dataId);
    throw new Error(`${NAME} (wasm): internal shape mismatch [${out.shape}] vs [${expectShape}]`);
  }
  return out;
}

/**
 * Stride 1: dcols[M, K] = dy[M, cout] · W[K, cout]ᵀ (M = N·OH·OW, K = kh·kw·cin) as one matMul
 * with the filter transposed here (small) so XNNPACK needs no transpose flag, then each patch
 * row is added back into dx (col2im). Fewer multiply-adds than the convolution, which spends
 * most of its work on the zero frame around dy.
 */
function matMulCol2Im(
  backend: WasmBackend,
  dy: TensorInfo,
  filter: TensorInfo,
  info: backend_util.Conv2DInfo,
  expectShape: readonly number[],
): TensorInfo {
  const { batchSize: N, inHeight: H, inWidth: W, inChannels: cin, outChannels: cout } = info;
  const { filterHeight: kh, filterWidth: kw, outHeight: OH, outWidth: OW } = info;
  const { top, left } = info.padInfo;
  const M = N * OH * OW;
  const K = kh * kw * cin;
  // Wᵀ [1, cout, K]: W is [K, cout] row-major.
  const wT = alloc(backend, [1, cout, K]);
  const dy3 = { dataId: dy.dataId, shape: [1, M, cout], dtype: dy.dtype };
  let cols: TensorInfo;
  try {
    const w = f32(backend, filter);
    const t = f32(backend, wT);
    for (let k = 0; k < K; k++) for (let o = 0; o < cout; o++) t[o * K + k] = w[k * cout + o];
    cols = callWasmKernel('BatchMatMul', backend, { a: dy3, b: wT }, { transposeA: false, transposeB: false });
  } finally {
    backend.disposeData(wT.dataId);
  }
  const out = alloc(backend, [...expectShape]);
  try {
    const c = f32(backend, cols);
    const dx = f32(backend, out);
    dx.fill(0);
    const rowK = kw * cin;
    let m = 0;
    for (let n = 0; n < N; n++) {
      for (let oy = 0; oy < OH; oy++) {
        for (let ox = 0; ox < OW; ox++, m++) {
          const base = m * K;
          for (let r = 0; r < kh; r++) {
            const y = oy + r - top;
            if (y < 0 || y >= H) continue;
            // Columns c of this filter row that land inside the image: x = ox + c − left.
            const c0 = Math.max(0, left - ox);
            const c1 = Math.min(kw, W + left - ox);
            if (c0 >= c1) continue;
            const dst = ((n * H + y) * W + (ox + c0 - left)) * cin;
            const src = base + r * rowK + c0 * cin;
            const len = (c1 - c0) * cin;
            for (let i = 0; i < len; i++) dx[dst + i] += c[src + i];
          }
        }
      }
    }
  } finally {
    backend.disposeData(cols.dataId);
  }
  return out;
}
