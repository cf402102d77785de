/**
 * Conv2DBackpropFilter for the wasm backend, which has none (tfjs issue 8474), so without it
 * tf.grads through conv2d fails on wasm. Two algorithms, both on the wasm backend's own
 * XNNPACK kernels:
 *
 *  - im2col: dW[K×Cout] = im2col(x)[K×M] · dy[M×Cout], K = kh·kw·Cin, M = N·OH·OW. im2col is
 *    written straight into a wasm-heap buffer already laid out [K×M] and multiplied
 *    by the BatchMatMul kernel with no transposes (its XNNPACK fast path). Large batches are
 *    split into chunks of images so the buffer stays bounded; chunk products are summed.
 *  - conv: the same sum written as a convolution of x with dy as the filter (batch and
 *    channels swapped), run by the Conv2D kernel, whose indirection buffer replaces the
 *    im2col copy. Faster at stride 1 with cin > 1, so 'auto' uses it there.
 */
import { backend_util } from '@tensorflow/tfjs-core';
import type { Conv2DBackpropFilterAttrs, TensorInfo } from '@tensorflow/tfjs-core';
import {
  alloc,
  callWasmKernel,
  f32,
  heapF32,
  input,
  offsetF32,
  sameShape,
  tupleAllOne,
  type KernelArgs,
  type WasmBackend,
} from './wasm_util.js';

const NAME = 'Conv2DBackpropFilter';

/** Default largest im2col buffer (16 MiB of float32); larger batches are done in chunks. */
const IM2COL_CHUNK_FLOATS = 4 * 1024 * 1024;

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
 * Loops run tap (r,c) → image row → channel → pixel: each step transposes one row segment
 * of x (which stays in L1) into cin contiguous runs of the output. With cin = 1 and stride 1
 * the runs are contiguous in x too and are moved with copyWithin on the heap.
 */
export function im2colKM(x: Float32Array, dst: Float32Array, n0: number, nb: number, g: ConvGeom): void {
  const { H, W, cin, kh, kw, sh, sw, padTop, padLeft, OH, OW } = g;
  const M = nb * OH * OW;
  const step = sw * cin;
  const imgSize = H * W * cin;
  // When x and dst live in the same buffer (the wasm heap), long runs are moved natively.
  const heap = x.buffer === dst.buffer ? new Float32Array(x.buffer) : undefined;
  const xOff = x.byteOffset >> 2;
  const dOff = dst.byteOffset >> 2;
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
            if (heap !== undefined && step === 1 && oxHi - oxLo >= 24) {
              // Contiguous run: a native memmove within the heap beats a JS loop here.
              heap.copyWithin(dOff + q0, xOff + s, xOff + s + oxHi - oxLo);
            } else {
              for (let ox = oxLo; ox < oxHi; ox++, s += step) dst[q0++] = x[s];
            }
          } else {
            // Channel by channel: reads stay within this row segment of x (in L1), writes
            // are contiguous runs along each of the cin rows.
            const nIn = oxHi - oxLo;
            for (let ci = 0, q = q0; ci < cin; ci++, q += M) {
              for (let i = 0, p = q, t = s + ci; i < nIn; i++, t += step) dst[p++] = x[t];
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
  const outShape = [g.kh, g.kw, g.cin, cout];

  if (N * g.OH * g.OW === 0 || g.kh * g.kw * g.cin * cout === 0) {
    const z = alloc(backend, outShape);
    f32(backend, z).fill(0);
    return z;
  }

  // Measured (bench/kernels-bench.ts): the convolution form wins at stride 1 with cin > 1,
  // where it skips an im2col that is a transpose done in JS; with cin = 1 the im2col rows are
  // contiguous runs of x (moved natively) and at stride 2 the dilated filter slows the
  // convolution form, so im2col is as fast or faster there.
  const method = conv2DBackpropFilterOptions.method;
  if (method === 'conv' || (method === 'auto' && g.sh === 1 && g.sw === 1 && g.cin > 1)) {
    const viaConv = filterGradViaConv(backend, x, dy, g, N, cout);
    if (viaConv !== undefined) return viaConv;
  }
  return filterGradIm2col(backend, x, dy, g, N, cout);
}

/**
 * Which algorithm Conv2DBackpropFilter uses: 'auto' (convolution form at stride 1 when
 * cin > 1, im2col otherwise), or one forced (benchmarks and tests). The convolution form
 * falls back to im2col when its geometry does not fit (e.g. rows of x that no output reads).
 */
export const conv2DBackpropFilterOptions: {
  method: 'auto' | 'im2col' | 'conv';
  /** Largest im2col chunk, in floats (at least one image is always taken). */
  im2colChunkFloats: number;
} = { method: 'auto', im2colChunkFloats: IM2COL_CHUNK_FLOATS };

/** dW via im2col [K×M] · dy [M×Cout] on the wasm BatchMatMul (XNNPACK fully-connected). */
export function filterGradIm2col(
  backend: WasmBackend,
  x: TensorInfo,
  dy: TensorInfo,
  g: ConvGeom,
  N: number,
  cout: number,
): TensorInfo {
  const K = g.kh * g.kw * g.cin;
  const P = g.OH * g.OW;
  const outShape = [g.kh, g.kw, g.cin, cout];
  // Images per chunk: keep the im2col buffer within im2colChunkFloats.
  const perChunk = Math.max(1, Math.min(N, Math.floor(conv2DBackpropFilterOptions.im2colChunkFloats / (K * P))));
  let acc: TensorInfo | undefined;
  try {
    for (let n0 = 0; n0 < N; n0 += perChunk) {
      const nb = Math.min(perChunk, N - n0);
      const Mc = nb * P;
      // dy rows of this chunk, copied into a fresh tensor: XNNPACK caches its packed copy of
      // the weights operand by data id (ignoring shape), so that operand must be a new id
      // which we dispose (freeing the cached operator) right after the product.
      const dyChunk = alloc(backend, [1, Mc, cout]);
      const cols = alloc(backend, [1, K, Mc]);
      let prod: TensorInfo;
      try {
        f32(backend, dyChunk).set(f32(backend, dy).subarray(n0 * P * cout, (n0 + nb) * P * cout));
        im2colKM(f32(backend, x), f32(backend, cols), n0, nb, g);
        prod = callWasmKernel('BatchMatMul', backend, { a: cols, b: dyChunk }, { transposeA: false, transposeB: false });
      } finally {
        backend.disposeData(dyChunk.dataId);
        backend.disposeData(cols.dataId);
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

/**
 * dW as a convolution with batch and channels swapped: the cin planes of x become a batch of
 * images with N channels, xT [cin,H,W,N], and dy becomes the filter, dyT [OH,OW,N,Cout]
 * (its taps spaced by the forward stride, i.e. dilated). conv(xT, dyT) is [cin,kh,kw,Cout],
 * so XNNPACK's convolution does the im2col implicitly (indirection) instead of us copying it.
 * Returns undefined when the geometry does not fit (then the im2col path is used).
 */
export function filterGradViaConv(
  backend: WasmBackend,
  x: TensorInfo,
  dy: TensorInfo,
  g: ConvGeom,
  N: number,
  cout: number,
): TensorInfo | undefined {
  const { H, W, cin, kh, kw, sh, sw, padTop, padLeft, OH, OW } = g;
  // Padding after the image such that the output is exactly kh × kw.
  const padBottom = kh + (OH - 1) * sh - H - padTop;
  const padRight = kw + (OW - 1) * sw - W - padLeft;
  if (padBottom < 0 || padRight < 0 || padTop < 0 || padLeft < 0) return undefined;

  const xT = alloc(backend, [cin, H, W, N]);
  const dyT = alloc(backend, [OH, OW, N, cout]);
  let out: TensorInfo;
  try {
    // xT[ci,h,w,n] = x[n,h,w,ci]
    {
      const src = f32(backend, x);
      const dst = f32(backend, xT);
      const img = H * W * cin;
      let p = 0;
      for (let ci = 0; ci < cin; ci++) {
        for (let hw = 0; hw < H * W; hw++) {
          for (let n = 0, s = hw * cin + ci; n < N; n++, s += img) dst[p++] = src[s];
        }
      }
    }
    // dyT[oy,ox,n,:] = dy[n,oy,ox,:]
    {
      const heap = heapF32(backend);
      const src = offsetF32(backend, dy);
      const dst = offsetF32(backend, dyT);
      const P = OH * OW;
      if (cout >= 24) {
        let q = dst;
        for (let pix = 0; pix < P; pix++) {
          for (let n = 0; n < N; n++, q += cout) {
            const s = src + (n * P + pix) * cout;
            heap.copyWithin(q, s, s + cout);
          }
        }
      } else {
        let q = dst;
        for (let pix = 0; pix < P; pix++) {
          for (let n = 0; n < N; n++) {
            const s = src + (n * P + pix) * cout;
            for (let co = 0; co < cout; co++) heap[q++] = heap[s + co];
          }
        }
      }
    }
    out = callWasmKernel('Conv2D', backend, { x: xT, filter: dyT }, {
      strides: [1, 1],
      pad: [
        [0, 0],
        [padTop, padBottom],
        [padLeft, padRight],
        [0, 0],
      ],
      dataFormat: 'NHWC',
      dilations: [sh, sw],
    });
  } finally {
    backend.disposeData(xT.dataId);
    backend.disposeData(dyT.dataId);
  }
  const outShape = [kh, kw, cin, cout];
  if (!sameShape(out.shape, [cin, kh, kw, cout])) {
    backend.disposeData(out.dataId);
    throw new Error(`${NAME} (wasm): internal shape mismatch [${out.shape}]`);
  }
  if (cin === 1) return { dataId: out.dataId, shape: outShape, dtype: 'float32' };
  // [cin,kh,kw,Cout] → [kh,kw,cin,Cout]
  const dW = alloc(backend, outShape);
  const src = f32(backend, out);
  const dst = f32(backend, dW);
  const taps = kh * kw;
  for (let ci = 0; ci < cin; ci++) {
    for (let t = 0; t < taps; t++) {
      const s = (ci * taps + t) * cout;
      const d = (t * cin + ci) * cout;
      for (let co = 0; co < cout; co++) dst[d + co] = src[s + co];
    }
  }
  backend.disposeData(out.dataId);
  return dW;
}
