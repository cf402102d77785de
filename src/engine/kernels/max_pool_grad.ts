/**
 * MaxPoolGrad for the wasm backend, replacing its built-in one (slow at batch 64).
 *
 * For each pooling window and channel, finds the argmax of x (scanning the window row by
 * row, the first maximum wins, NaN never wins: as tfjs's cpu backend and PyTorch do) and adds
 * dy to dx there. One JS pass over zero-copy views of the wasm heap, channels innermost so
 * reads are contiguous. Non-float32 inputs or dilated pools go to the original kernel.
 */
import { backend_util } from '@tensorflow/tfjs-core';
import type { KernelFunc, MaxPoolGradAttrs, TensorInfo } from '@tensorflow/tfjs-core';
import { alloc, f32, input, sameShape, type KernelArgs, type WasmBackend } from './wasm_util.js';

const NAME = 'MaxPoolGrad';

/**
 * dx (zeroed by the caller) += scatter of dy to the argmax of each window of x.
 * All arrays NHWC and flat; pool geometry as computePool2DInfo gives it.
 */
export function maxPoolGradInto(
  x: Float32Array,
  dy: Float32Array,
  dx: Float32Array,
  N: number,
  H: number,
  W: number,
  C: number,
  OH: number,
  OW: number,
  fh: number,
  fw: number,
  sh: number,
  sw: number,
  padTop: number,
  padLeft: number,
): void {
  const rowStride = W * C;
  let o = 0; // index into dy, advancing in NHWC order
  for (let n = 0; n < N; n++) {
    const img = n * H * rowStride;
    for (let yR = 0; yR < OH; yR++) {
      const r0 = yR * sh - padTop;
      const rLo = Math.max(0, r0);
      const rHi = Math.min(H, r0 + fh);
      for (let yC = 0; yC < OW; yC++) {
        const c0 = yC * sw - padLeft;
        const cLo = Math.max(0, c0);
        const cHi = Math.min(W, c0 + fw);
        const corner = img + rLo * rowStride + cLo * C;
        if (rHi - rLo === 2 && cHi - cLo === 2) {
          // The common 2×2 window, unrolled; same scan order and tie rule as below.
          for (let d = 0; d < C; d++, o++) {
            const p0 = corner + d;
            const p2 = p0 + rowStride;
            let best = -Infinity;
            let pos = -1;
            let v = x[p0];
            if (v > best) { best = v; pos = p0; }
            v = x[p0 + C];
            if (v > best) { best = v; pos = p0 + C; }
            v = x[p2];
            if (v > best) { best = v; pos = p2; }
            v = x[p2 + C];
            if (v > best) { pos = p2 + C; }
            if (pos >= 0) dx[pos] += dy[o];
          }
          continue;
        }
        for (let d = 0; d < C; d++, o++) {
          let best = -Infinity;
          let pos = -1;
          for (let r = rLo, rowBase = corner + d; r < rHi; r++, rowBase += rowStride) {
            for (let c = cLo, p = rowBase; c < cHi; c++, p += C) {
              const v = x[p];
              if (v > best) {
                best = v;
                pos = p;
              }
            }
          }
          if (pos >= 0) dx[pos] += dy[o];
        }
      }
    }
  }
}

export function makeMaxPoolGradWasm(original: KernelFunc | undefined): KernelFunc {
  const fallback = (args: KernelArgs, why: string): TensorInfo => {
    if (original === undefined) throw new Error(`${NAME} (wasm): unsupported case (${why}) and no built-in kernel`);
    return original(args) as TensorInfo;
  };
  return (args: KernelArgs): TensorInfo => {
    const backend = args.backend as WasmBackend;
    const dy = input(args.inputs, 'dy', NAME);
    const x = input(args.inputs, 'input', NAME);
    const attrs = (args.attrs ?? {}) as unknown as MaxPoolGradAttrs & { dilations?: unknown };
    if (x.dtype !== 'float32' || dy.dtype !== 'float32') return fallback(args, 'dtype');
    if (x.shape.length !== 4) return fallback(args, 'rank');
    const info = backend_util.computePool2DInfo(
      x.shape as [number, number, number, number],
      attrs.filterSize,
      attrs.strides,
      (attrs.dilations ?? 1) as number | [number, number],
      attrs.pad,
      attrs.dimRoundingMode,
    );
    if (info.dilationHeight !== 1 || info.dilationWidth !== 1) return fallback(args, 'dilations');
    if (!sameShape(dy.shape, info.outShape)) return fallback(args, 'dy shape');
    const dx = alloc(backend, x.shape.slice());
    const dxv = f32(backend, dx);
    dxv.fill(0);
    maxPoolGradInto(
      f32(backend, x),
      f32(backend, dy),
      dxv,
      info.batchSize,
      info.inHeight,
      info.inWidth,
      info.inChannels,
      info.outHeight,
      info.outWidth,
      info.filterHeight,
      info.filterWidth,
      info.strideHeight,
      info.strideWidth,
      info.padInfo.top,
      info.padInfo.left,
    );
    return dx;
  };
}
