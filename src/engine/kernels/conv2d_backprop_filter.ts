/**
 * Conv2DBackpropFilter for the wasm backend, which has none (tfjs issue 8474), so without it
 * tf.grads through conv2d fails on wasm.
 *
 * dW[K×Cout] = im2col(x)[K×M] · dy[M×Cout], with K = kh·kw·Cin and M = N·OH·OW. im2col is
 * written straight into a reusable wasm-heap buffer already laid out [K×M], and the product
 * is computed by the wasm backend's own BatchMatMul (XNNPACK fully-connected) with no
 * transposes, which is its fast path. Large batches are split into chunks of images so the
 * im2col buffer stays bounded, and the chunk products are summed.
 */
import { backend_util } from '@tensorflow/tfjs-core';
import type { Conv2DBackpropFilterAttrs, TensorInfo } from '@tensorflow/tfjs-core';
import {
  alloc,
  borrowScratch,
  callWasmKernel,
  f32,
  input,
  releaseScratch,
  sameShape,
  SCRATCH_KEEP_FLOATS,
  tupleAllOne,
  type KernelArgs,
  type WasmBackend,
} from './wasm_util.js';

const NAME = 'Conv2DBackpropFilter';

/** Geometry of one convolution, NHWC, dilation 1. */
export interface ConvGeom {
  H: number;
  W: number;
  cin: number;
  kh: number;
  kw: number;
  sh: number;
  sw: number;
  padTop: number;
  padLeft: number;
  OH: number;
  OW: number;
}

/**
 * Writes im2col of images [n0, n0+nb) of x (NHWC, flat) into dst laid out [K×M]:
 * row k = (r·kw + c)·cin + ci, column m = ((n−n0)·OH + oy)·OW + ox; out-of-image taps are 0.
 * Loops run tap (r,c) → pixel → channel, so x is read in contiguous channel runs and the
 * writes advance along cin rows at once (a small transpose per tap), which keeps both sides
 * cache-friendly for any cin.
 */
export function im2colKM(x: Float32Array, dst: Float32Array, n0: number, nb: number, g: ConvGeom): void {
  const { H, W, cin, kh, kw, sh, sw, padTop, padLeft, OH, OW } = g;
  const M = nb * OH * OW;
  const step = sw * cin;
  const imgSize = H * W * cin;
  for (let r = 0; r < kh; r++) {
    // Output rows whose tap r lands inside the image: 0 <= oy*sh - padTop + r < H.
    const oyLo = Math.min(OH, Math.max(0, Math.ceil((padTop - r) / sh)));
    const oyHi = Math.max(oyLo, Math.min(OH, Math.floor((H - 1 + padTop - r) / sh) + 1));
    for (let c = 0; c < kw; c++) {
      const oxLo = Math.min(OW, Math.max(0, Math.ceil((padLeft - c) / sw)));
      const oxHi = Math.max(oxLo, Math.min(OW, Math.floor((W - 1 + padLeft - c) / sw) + 1));
      const row0 = (r * kw + c) * cin * M; // offset of row (r, c, ci = 0)
      for (let n = n0; n < n0 + nb; n++) {
        const img = n * imgSize;
        for (let oy = 0; oy < OH; oy++) {
          const col = ((n - n0) * OH + oy) * OW;
          if (oy < oyLo || oy >= oyHi) {
            for (let ci = 0, q = row0 + col; ci < cin; ci++, q += M) dst.fill(0, q, q + OW);
            continue;
          }
          if (oxLo > 0 || oxHi < OW) {
            for (let ci = 0, q = row0 + col; ci < cin; ci++, q += M) {
              if (oxLo > 0) dst.fill(0, q, q + oxLo);
              if (oxHi < OW) dst.fill(0, q + oxHi, q + OW);
            }
          }
          const iy = oy * sh - padTop + r;
          let s = img + (iy * W + oxLo * sw - padLeft + c) * cin;
          let q0 = row0 + col + oxLo;
          if (cin === 1) {
            for (let ox = oxLo; ox < oxHi; ox++, s += step) dst[q0++] = x[s];
          } else {
            for (let ox = oxLo; ox < oxHi; ox++, s += step, q0++) {
              for (let ci = 0, q = q0; ci < cin; ci++, q += M) dst[q] = x[s + ci];
            }
          }
        }
      }
    }
  }
}

export function conv2DBackpropFilterWasm(args: KernelArgs): TensorInfo {
  const backend = args.backend as WasmBackend;
  const x = input(args.inputs, 'x', NAME);
  const dy = input(args.inputs, 'dy', NAME);
  const attrs = (args.attrs ?? {}) as unknown as Conv2DBackpropFilterAttrs & { dilations?: unknown };
  const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs;

  if (dataFormat === 'NCHW') {
    throw new Error(`${NAME} (wasm): only dataFormat 'NHWC' is supported, got 'NCHW'`);
  }
  if (!tupleAllOne(attrs.dilations)) {
    throw new Error(`${NAME} (wasm): dilations other than 1 are not supported, got ${String(attrs.dilations)}`);
  }
  if (x.dtype !== 'float32' || dy.dtype !== 'float32') {
    throw new Error(`${NAME} (wasm): float32 only, got x ${x.dtype} and dy ${dy.dtype}`);
  }
  if (x.shape.length !== 4 || dy.shape.length !== 4) {
    throw new Error(`${NAME} (wasm): x and dy must be rank 4, got [${x.shape}] and [${dy.shape}]`);
  }
  const info = backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number],
    filterShape,
    strides,
    1,
    pad,
    dimRoundingMode,
    false,
    'channelsLast',
  );
  if (!sameShape(dy.shape, info.outShape)) {
    throw new Error(`${NAME} (wasm): dy has shape [${dy.shape}], expected [${info.outShape}]`);
  }
  const g: ConvGeom = {
    H: info.inHeight,
    W: info.inWidth,
    cin: info.inChannels,
    kh: info.filterHeight,
    kw: info.filterWidth,
    sh: info.strideHeight,
    sw: info.strideWidth,
    padTop: info.padInfo.top,
    padLeft: info.padInfo.left,
    OH: info.outHeight,
    OW: info.outWidth,
  };
  const N = info.batchSize;
  const cout = info.outChannels;
  const K = g.kh * g.kw * g.cin;
  const P = g.OH * g.OW;
  const outShape = [g.kh, g.kw, g.cin, cout];

  if (N * P === 0 || K * cout === 0) {
    const z = alloc(backend, outShape);
    f32(backend, z).fill(0);
    return z;
  }

  // Images per chunk: keep the im2col buffer within the scratch size we retain.
  const perChunk = Math.max(1, Math.min(N, Math.floor(SCRATCH_KEEP_FLOATS / (K * P))));
  let acc: TensorInfo | undefined;
  try {
    for (let n0 = 0; n0 < N; n0 += perChunk) {
      const nb = Math.min(perChunk, N - n0);
      const Mc = nb * P;
      // dy rows of this chunk, copied into a fresh tensor: XNNPACK caches its packed copy of
      // the weights operand by data id (ignoring shape), so that operand must be a new id
      // which we dispose (freeing the cached operator) right after the product.
      const dyChunk = alloc(backend, [1, Mc, cout]);
      const cols = borrowScratch(backend, [1, K, Mc]);
      let prod: TensorInfo;
      try {
        f32(backend, dyChunk).set(f32(backend, dy).subarray(n0 * P * cout, (n0 + nb) * P * cout));
        im2colKM(f32(backend, x), f32(backend, cols), n0, nb, g);
        prod = callWasmKernel('BatchMatMul', backend, { a: cols, b: dyChunk }, { transposeA: false, transposeB: false });
      } finally {
        backend.disposeData(dyChunk.dataId);
        releaseScratch(backend);
      }
      if (acc === undefined) {
        acc = prod;
      } else {
        const a = f32(backend, { ...acc, shape: [K * cout] });
        const b = f32(backend, { ...prod, shape: [K * cout] });
        for (let i = 0; i < a.length; i++) a[i] += b[i];
        backend.disposeData(prod.dataId);
      }
    }
  } catch (e) {
    if (acc !== undefined) backend.disposeData(acc.dataId);
    throw e;
  }
  return { dataId: acc!.dataId, shape: outShape, dtype: 'float32' };
}
