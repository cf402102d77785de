/**
 * The fused CPU engine's kernels, in AssemblyScript, compiled to WebAssembly with 128-bit SIMD.
 *
 * Why they exist: on tfjs's wasm backend one training step of `net` is ~100 kernel calls, each
 * with its own dispatch, allocation and copy, and the gradient kernels a CNN needs are missing or
 * slow there. These kernels run a whole step's layers on buffers that stay in one linear memory.
 *
 * Conventions (the TypeScript side, ../step.ts, lays the memory out):
 *   - every pointer is a byte offset into this module's memory; every tensor is float32;
 *   - activations are NHWC with the channel count padded to a multiple of 4 (padding lanes hold 0),
 *     so that the innermost loops run over 4 channels per f32x4;
 *   - conv weights are [K, K, Cin, Cout] (tfjs's layout, channels padded); the input gradient uses
 *     the same weights repacked as [K, K, Cout, Cin];
 *   - gradient kernels *accumulate* (+=) into their outputs: the caller zeroes them per shard.
 * Every sum runs in a fixed order, with separate multiply and add (no fused multiply-add), so the
 * results are the same bits on every machine: deterministic mode depends on it.
 *
 * The channel blocks of convPair and convFilterGrad (20 in convFilterGrad, 16, 12, 8 and 4 channels)
 * are the same loop written out for 5, 4, 3, 2 and 1 accumulator vectors per pixel: AssemblyScript
 * cannot make a count of v128 locals generic, and the accumulators must stay in registers. A change
 * to one block goes to all of them. Each accumulator is a chain of dependent adds, so wider blocks
 * keep more adds in flight: a 4-channel block alone runs at the adds' latency, not their throughput.
 */

// The reducer's kernels (sums of gradients, finiteness) and the optimizer's update live in their own file, in this same module.
export { addInto, allFinite, sgdStep, widenBfloat16, widenFloat16 } from './reduce';

/** Where free memory starts: below it lie this module's static data (Math.exp's tables among them). */
export function heapBase(): usize {
  return __heap_base;
}

// @ts-ignore: decorator
@inline function at(base: usize, index: i32): usize {
  return base + (<usize>index << 2);
}

// @ts-ignore: decorator
@inline function mac(acc: v128, a: v128, b: v128): v128 {
  return f32x4.add(acc, f32x4.mul(a, b));
}

/**
 * Convolution, stride 1, zero padding `pad`: y[n,OH,OW,Co] = b + Σ x[n,iy,ix,ci]·w[ky,kx,ci,co].
 * Ci may be any count (the first layer has 1); Co is a multiple of 4. The input gradient of a
 * convolution is this same kernel on dy, with the weights turned 180° and in/out swapped, and
 * padding K−1−pad: see ../step.ts.
 *
 * Output pixels go in pairs (ox, ox+1): each weight vector loaded serves both. Channels go 16 at
 * a time, then 12, 8 or 4 (12 is conv1's 10 padded: one pass, not two). Near a padded
 * border the two see different kernel columns: the columns both see are done together, the rest
 * for each pixel alone.
 */
export function convForward(x: usize, n: i32, H: i32, W: i32, Ci: i32, w: usize, b: usize, K: i32, pad: i32, Co: i32, y: usize): void {
  const OH = H + 2 * pad - K + 1;
  const OW = W + 2 * pad - K + 1;
  for (let s = 0; s < n; s++) {
    for (let oy = 0; oy < OH; oy++) {
      const kyLo = max(0, pad - oy);
      const kyHi = min(K, H + pad - oy);
      let ox = 0;
      for (; ox + 1 < OW; ox += 2) convPair(x, s, H, W, Ci, w, b, K, pad, Co, y, OH, OW, oy, ox, kyLo, kyHi);
      if (ox < OW) convPixel(x, s, H, W, Ci, w, b, K, pad, Co, y, OH, OW, oy, ox, kyLo, kyHi);
    }
  }
}

// @ts-ignore: decorator
@inline function convPair(x: usize, s: i32, H: i32, W: i32, Ci: i32, w: usize, b: usize, K: i32, pad: i32, Co: i32, y: usize, OH: i32, OW: i32, oy: i32, ox: i32, kyLo: i32, kyHi: i32): void {
  const wStep = <usize>Co << 2;
  const next = <usize>Ci << 2; // pixel 1's input is one pixel right of pixel 0's
  // Kernel columns each pixel sees: pixel 0 [lo0, hi0), pixel 1 [lo1, hi1); lo1 ≤ lo0, hi1 ≤ hi0.
  const lo0 = max(0, pad - ox);
  const hi0 = min(K, W + pad - ox);
  const lo1 = max(0, pad - ox - 1);
  const hi1 = min(K, W + pad - ox - 1);
  const shared = max(0, hi1 - lo0) * Ci;
  const only0 = (hi0 - max(hi1, lo0)) * Ci;
  const only1 = (min(lo0, hi1) - lo1) * Ci;
  const yp = at(y, ((s * OH + oy) * OW + ox) * Co);
  const yq = yp + (<usize>Co << 2);
  let cb = 0;
  for (; cb + 16 <= Co; cb += 16) {
    let a0 = v128.load(at(b, cb)), a1 = v128.load(at(b, cb), 16), a2 = v128.load(at(b, cb), 32), a3 = v128.load(at(b, cb), 48);
    let c0 = a0, c1 = a1, c2 = a2, c3 = a3;
    for (let ky = kyLo; ky < kyHi; ky++) {
      const row = at(x, ((s * H + oy + ky - pad) * W + ox - pad) * Ci); // pixel 0's input at kx = 0
      const wrow = at(w, ky * K * Ci * Co + cb);
      // both pixels: kx in [lo0, hi1)
      let xp = row + (<usize>(lo0 * Ci) << 2);
      let wp = wrow + (<usize>(lo0 * Ci * Co) << 2);
      for (let t = 0; t < shared; t++) {
        const xs = v128.load32_splat(xp);
        const xt = v128.load32_splat(xp + next);
        let wv = v128.load(wp);
        a0 = mac(a0, xs, wv); c0 = mac(c0, xt, wv);
        wv = v128.load(wp, 16);
        a1 = mac(a1, xs, wv); c1 = mac(c1, xt, wv);
        wv = v128.load(wp, 32);
        a2 = mac(a2, xs, wv); c2 = mac(c2, xt, wv);
        wv = v128.load(wp, 48);
        a3 = mac(a3, xs, wv); c3 = mac(c3, xt, wv);
        xp += 4;
        wp += wStep;
      }
      // pixel 0 alone: kx in [hi1, hi0)
      for (let t = 0; t < only0; t++) {
        const xs = v128.load32_splat(xp);
        a0 = mac(a0, xs, v128.load(wp));
        a1 = mac(a1, xs, v128.load(wp, 16));
        a2 = mac(a2, xs, v128.load(wp, 32));
        a3 = mac(a3, xs, v128.load(wp, 48));
        xp += 4;
        wp += wStep;
      }
      // pixel 1 alone: kx in [lo1, lo0)
      xp = row + (<usize>(lo1 * Ci) << 2);
      wp = wrow + (<usize>(lo1 * Ci * Co) << 2);
      for (let t = 0; t < only1; t++) {
        const xt = v128.load32_splat(xp + next);
        c0 = mac(c0, xt, v128.load(wp));
        c1 = mac(c1, xt, v128.load(wp, 16));
        c2 = mac(c2, xt, v128.load(wp, 32));
        c3 = mac(c3, xt, v128.load(wp, 48));
        xp += 4;
        wp += wStep;
      }
    }
    v128.store(at(yp, cb), a0);
    v128.store(at(yp, cb), a1, 16);
    v128.store(at(yp, cb), a2, 32);
    v128.store(at(yp, cb), a3, 48);
    v128.store(at(yq, cb), c0);
    v128.store(at(yq, cb), c1, 16);
    v128.store(at(yq, cb), c2, 32);
    v128.store(at(yq, cb), c3, 48);
  }
  for (; Co - cb == 12; cb += 12) {
    let a0 = v128.load(at(b, cb)), a1 = v128.load(at(b, cb), 16), a2 = v128.load(at(b, cb), 32);
    let c0 = a0, c1 = a1, c2 = a2;
    for (let ky = kyLo; ky < kyHi; ky++) {
      const row = at(x, ((s * H + oy + ky - pad) * W + ox - pad) * Ci); // pixel 0's input at kx = 0
      const wrow = at(w, ky * K * Ci * Co + cb);
      // both pixels: kx in [lo0, hi1)
      let xp = row + (<usize>(lo0 * Ci) << 2);
      let wp = wrow + (<usize>(lo0 * Ci * Co) << 2);
      for (let t = 0; t < shared; t++) {
        const xs = v128.load32_splat(xp);
        const xt = v128.load32_splat(xp + next);
        let wv = v128.load(wp);
        a0 = mac(a0, xs, wv); c0 = mac(c0, xt, wv);
        wv = v128.load(wp, 16);
        a1 = mac(a1, xs, wv); c1 = mac(c1, xt, wv);
        wv = v128.load(wp, 32);
        a2 = mac(a2, xs, wv); c2 = mac(c2, xt, wv);
        xp += 4;
        wp += wStep;
      }
      // pixel 0 alone: kx in [hi1, hi0)
      for (let t = 0; t < only0; t++) {
        const xs = v128.load32_splat(xp);
        a0 = mac(a0, xs, v128.load(wp));
        a1 = mac(a1, xs, v128.load(wp, 16));
        a2 = mac(a2, xs, v128.load(wp, 32));
        xp += 4;
        wp += wStep;
      }
      // pixel 1 alone: kx in [lo1, lo0)
      xp = row + (<usize>(lo1 * Ci) << 2);
      wp = wrow + (<usize>(lo1 * Ci * Co) << 2);
      for (let t = 0; t < only1; t++) {
        const xt = v128.load32_splat(xp + next);
        c0 = mac(c0, xt, v128.load(wp));
        c1 = mac(c1, xt, v128.load(wp, 16));
        c2 = mac(c2, xt, v128.load(wp, 32));
        xp += 4;
        wp += wStep;
      }
    }
    v128.store(at(yp, cb), a0);
    v128.store(at(yp, cb), a1, 16);
    v128.store(at(yp, cb), a2, 32);
    v128.store(at(yq, cb), c0);
    v128.store(at(yq, cb), c1, 16);
    v128.store(at(yq, cb), c2, 32);
  }
  for (; cb + 8 <= Co; cb += 8) {
    let a0 = v128.load(at(b, cb)), a1 = v128.load(at(b, cb), 16);
    let c0 = a0, c1 = a1;
    for (let ky = kyLo; ky < kyHi; ky++) {
      const row = at(x, ((s * H + oy + ky - pad) * W + ox - pad) * Ci); // pixel 0's input at kx = 0
      const wrow = at(w, ky * K * Ci * Co + cb);
      // both pixels: kx in [lo0, hi1)
      let xp = row + (<usize>(lo0 * Ci) << 2);
      let wp = wrow + (<usize>(lo0 * Ci * Co) << 2);
      for (let t = 0; t < shared; t++) {
        const xs = v128.load32_splat(xp);
        const xt = v128.load32_splat(xp + next);
        let wv = v128.load(wp);
        a0 = mac(a0, xs, wv); c0 = mac(c0, xt, wv);
        wv = v128.load(wp, 16);
        a1 = mac(a1, xs, wv); c1 = mac(c1, xt, wv);
        xp += 4;
        wp += wStep;
      }
      // pixel 0 alone: kx in [hi1, hi0)
      for (let t = 0; t < only0; t++) {
        const xs = v128.load32_splat(xp);
        a0 = mac(a0, xs, v128.load(wp));
        a1 = mac(a1, xs, v128.load(wp, 16));
        xp += 4;
        wp += wStep;
      }
      // pixel 1 alone: kx in [lo1, lo0)
      xp = row + (<usize>(lo1 * Ci) << 2);
      wp = wrow + (<usize>(lo1 * Ci * Co) << 2);
      for (let t = 0; t < only1; t++) {
        const xt = v128.load32_splat(xp + next);
        c0 = mac(c0, xt, v128.load(wp));
        c1 = mac(c1, xt, v128.load(wp, 16));
        xp += 4;
        wp += wStep;
      }
    }
    v128.store(at(yp, cb), a0);
    v128.store(at(yp, cb), a1, 16);
    v128.store(at(yq, cb), c0);
    v128.store(at(yq, cb), c1, 16);
  }
  for (; cb < Co; cb += 4) {
    let a0 = v128.load(at(b, cb));
    let c0 = a0;
    for (let ky = kyLo; ky < kyHi; ky++) {
      const row = at(x, ((s * H + oy + ky - pad) * W + ox - pad) * Ci); // pixel 0's input at kx = 0
      const wrow = at(w, ky * K * Ci * Co + cb);
      // both pixels: kx in [lo0, hi1)
      let xp = row + (<usize>(lo0 * Ci) << 2);
      let wp = wrow + (<usize>(lo0 * Ci * Co) << 2);
      for (let t = 0; t < shared; t++) {
        const xs = v128.load32_splat(xp);
        const xt = v128.load32_splat(xp + next);
        let wv = v128.load(wp);
        a0 = mac(a0, xs, wv); c0 = mac(c0, xt, wv);
        xp += 4;
        wp += wStep;
      }
      // pixel 0 alone: kx in [hi1, hi0)
      for (let t = 0; t < only0; t++) {
        const xs = v128.load32_splat(xp);
        a0 = mac(a0, xs, v128.load(wp));
        xp += 4;
        wp += wStep;
      }
      // pixel 1 alone: kx in [lo1, lo0)
      xp = row + (<usize>(lo1 * Ci) << 2);
      wp = wrow + (<usize>(lo1 * Ci * Co) << 2);
      for (let t = 0; t < only1; t++) {
        const xt = v128.load32_splat(xp + next);
        c0 = mac(c0, xt, v128.load(wp));
        xp += 4;
        wp += wStep;
      }
    }
    v128.store(at(yp, cb), a0);
    v128.store(at(yq, cb), c0);
  }
}

// @ts-ignore: decorator
@inline function convPixel(x: usize, s: i32, H: i32, W: i32, Ci: i32, w: usize, b: usize, K: i32, pad: i32, Co: i32, y: usize, OH: i32, OW: i32, oy: i32, ox: i32, kyLo: i32, kyHi: i32): void {
  const wStep = <usize>Co << 2;
  const kxLo = max(0, pad - ox);
  const kxHi = min(K, W + pad - ox);
  const taps = (kxHi - kxLo) * Ci;
  const yp = at(y, ((s * OH + oy) * OW + ox) * Co);
  for (let cb = 0; cb < Co; cb += 4) {
    let a0 = v128.load(at(b, cb));
    for (let ky = kyLo; ky < kyHi; ky++) {
      let xp = at(x, ((s * H + oy + ky - pad) * W + ox + kxLo - pad) * Ci);
      let wp = at(w, (ky * K + kxLo) * Ci * Co + cb);
      for (let t = 0; t < taps; t++) {
        a0 = mac(a0, v128.load32_splat(xp), v128.load(wp));
        xp += 4;
        wp += wStep;
      }
    }
    v128.store(at(yp, cb), a0);
  }
}

/**
 * Weight gradient of convForward: dw[ky,kx,ci,co] += Σ_{n,oy,ox} x[n,oy+ky−pad,ox+kx−pad,ci]·dy[n,oy,ox,co].
 * Rows ci ≥ CiUsed (channel padding, whose x is 0) are skipped. Sample by sample, so that one
 * sample's x and dy stay in the L1 cache while every row reads them; rows go in pairs of
 * neighbouring kernel columns (kx, kx+1), which read the same dy.
 * Channels go 20 at a time where exactly 20 are left (conv2: one block of 5 accumulator vectors per
 * column instead of 16 + a 4-channel block of one), else 16, 12, 8, 4. The column left over by an
 * odd K gets the same wide blocks: measured on net's shapes, both cut this kernel's time by about a
 * fifth (conv1 and conv2), with the same bits.
 */
export function convFilterGrad(x: usize, n: i32, H: i32, W: i32, Ci: i32, CiUsed: i32, dy: usize, K: i32, pad: i32, Co: i32, dw: usize): void {
  const OH = H + 2 * pad - K + 1;
  const OW = W + 2 * pad - K + 1;
  const xStep = <usize>Ci << 2;
  const dyStep = <usize>Co << 2;
  const next = xStep; // column kx+1 reads x one pixel to the right
  for (let s = 0; s < n; s++) {
    for (let ky = 0; ky < K; ky++) {
      const oyLo = max(0, pad - ky);
      const oyHi = min(OH, H + pad - ky);
      let kx = 0;
      for (; kx < K; kx++) {
        const oxLo = max(0, pad - kx);
        const oxHi = min(OW, W + pad - kx);
        // A pair needs both columns to see the same output pixels (always so without padding).
        const paired = kx + 1 < K && max(0, pad - kx - 1) == oxLo && min(OW, W + pad - kx - 1) == oxHi;
        for (let ci = 0; ci < CiUsed; ci++) {
          const r0 = at(dw, ((ky * K + kx) * Ci + ci) * Co);
          let cb = 0;
          if (paired) {
            const r1 = r0 + (<usize>(Ci * Co) << 2);
          for (; cb + 16 <= Co && Co - cb != 20; cb += 16) {
            let a0 = v128.load(at(r0, cb)), a1 = v128.load(at(r0, cb), 16), a2 = v128.load(at(r0, cb), 32), a3 = v128.load(at(r0, cb), 48);
            let c0 = v128.load(at(r1, cb)), c1 = v128.load(at(r1, cb), 16), c2 = v128.load(at(r1, cb), 32), c3 = v128.load(at(r1, cb), 48);
            for (let oy = oyLo; oy < oyHi; oy++) {
              let xp = at(x, ((s * H + oy + ky - pad) * W + oxLo + kx - pad) * Ci + ci);
              let dyp = at(dy, ((s * OH + oy) * OW + oxLo) * Co + cb);
              for (let ox = oxLo; ox < oxHi; ox++) {
                const xs = v128.load32_splat(xp);
                const xt = v128.load32_splat(xp + next);
                let g = v128.load(dyp);
                a0 = mac(a0, xs, g); c0 = mac(c0, xt, g);
                g = v128.load(dyp, 16);
                a1 = mac(a1, xs, g); c1 = mac(c1, xt, g);
                g = v128.load(dyp, 32);
                a2 = mac(a2, xs, g); c2 = mac(c2, xt, g);
                g = v128.load(dyp, 48);
                a3 = mac(a3, xs, g); c3 = mac(c3, xt, g);
                xp += xStep;
                dyp += dyStep;
              }
            }
            v128.store(at(r0, cb), a0);
            v128.store(at(r0, cb), a1, 16);
            v128.store(at(r0, cb), a2, 32);
            v128.store(at(r0, cb), a3, 48);
            v128.store(at(r1, cb), c0);
            v128.store(at(r1, cb), c1, 16);
            v128.store(at(r1, cb), c2, 32);
            v128.store(at(r1, cb), c3, 48);
          }
          for (; Co - cb == 20; cb += 20) {
            let a0 = v128.load(at(r0, cb)), a1 = v128.load(at(r0, cb), 16), a2 = v128.load(at(r0, cb), 32), a3 = v128.load(at(r0, cb), 48), a4 = v128.load(at(r0, cb), 64);
            let c0 = v128.load(at(r1, cb)), c1 = v128.load(at(r1, cb), 16), c2 = v128.load(at(r1, cb), 32), c3 = v128.load(at(r1, cb), 48), c4 = v128.load(at(r1, cb), 64);
            for (let oy = oyLo; oy < oyHi; oy++) {
              let xp = at(x, ((s * H + oy + ky - pad) * W + oxLo + kx - pad) * Ci + ci);
              let dyp = at(dy, ((s * OH + oy) * OW + oxLo) * Co + cb);
              for (let ox = oxLo; ox < oxHi; ox++) {
                const xs = v128.load32_splat(xp);
                const xt = v128.load32_splat(xp + next);
                let g = v128.load(dyp);
                a0 = mac(a0, xs, g); c0 = mac(c0, xt, g);
                g = v128.load(dyp, 16);
                a1 = mac(a1, xs, g); c1 = mac(c1, xt, g);
                g = v128.load(dyp, 32);
                a2 = mac(a2, xs, g); c2 = mac(c2, xt, g);
                g = v128.load(dyp, 48);
                a3 = mac(a3, xs, g); c3 = mac(c3, xt, g);
                g = v128.load(dyp, 64);
                a4 = mac(a4, xs, g); c4 = mac(c4, xt, g);
                xp += xStep;
                dyp += dyStep;
              }
            }
            v128.store(at(r0, cb), a0);
            v128.store(at(r0, cb), a1, 16);
            v128.store(at(r0, cb), a2, 32);
            v128.store(at(r0, cb), a3, 48);
            v128.store(at(r0, cb), a4, 64);
            v128.store(at(r1, cb), c0);
            v128.store(at(r1, cb), c1, 16);
            v128.store(at(r1, cb), c2, 32);
            v128.store(at(r1, cb), c3, 48);
            v128.store(at(r1, cb), c4, 64);
          }
          for (; Co - cb == 12; cb += 12) {
            let a0 = v128.load(at(r0, cb)), a1 = v128.load(at(r0, cb), 16), a2 = v128.load(at(r0, cb), 32);
            let c0 = v128.load(at(r1, cb)), c1 = v128.load(at(r1, cb), 16), c2 = v128.load(at(r1, cb), 32);
            for (let oy = oyLo; oy < oyHi; oy++) {
              let xp = at(x, ((s * H + oy + ky - pad) * W + oxLo + kx - pad) * Ci + ci);
              let dyp = at(dy, ((s * OH + oy) * OW + oxLo) * Co + cb);
              for (let ox = oxLo; ox < oxHi; ox++) {
                const xs = v128.load32_splat(xp);
                const xt = v128.load32_splat(xp + next);
                let g = v128.load(dyp);
                a0 = mac(a0, xs, g); c0 = mac(c0, xt, g);
                g = v128.load(dyp, 16);
                a1 = mac(a1, xs, g); c1 = mac(c1, xt, g);
                g = v128.load(dyp, 32);
                a2 = mac(a2, xs, g); c2 = mac(c2, xt, g);
                xp += xStep;
                dyp += dyStep;
              }
            }
            v128.store(at(r0, cb), a0);
            v128.store(at(r0, cb), a1, 16);
            v128.store(at(r0, cb), a2, 32);
            v128.store(at(r1, cb), c0);
            v128.store(at(r1, cb), c1, 16);
            v128.store(at(r1, cb), c2, 32);
          }
          for (; cb + 8 <= Co; cb += 8) {
            let a0 = v128.load(at(r0, cb)), a1 = v128.load(at(r0, cb), 16);
            let c0 = v128.load(at(r1, cb)), c1 = v128.load(at(r1, cb), 16);
            for (let oy = oyLo; oy < oyHi; oy++) {
              let xp = at(x, ((s * H + oy + ky - pad) * W + oxLo + kx - pad) * Ci + ci);
              let dyp = at(dy, ((s * OH + oy) * OW + oxLo) * Co + cb);
              for (let ox = oxLo; ox < oxHi; ox++) {
                const xs = v128.load32_splat(xp);
                const xt = v128.load32_splat(xp + next);
                let g = v128.load(dyp);
                a0 = mac(a0, xs, g); c0 = mac(c0, xt, g);
                g = v128.load(dyp, 16);
                a1 = mac(a1, xs, g); c1 = mac(c1, xt, g);
                xp += xStep;
                dyp += dyStep;
              }
            }
            v128.store(at(r0, cb), a0);
            v128.store(at(r0, cb), a1, 16);
            v128.store(at(r1, cb), c0);
            v128.store(at(r1, cb), c1, 16);
          }
          for (; cb < Co; cb += 4) {
            let a0 = v128.load(at(r0, cb));
            let c0 = v128.load(at(r1, cb));
            for (let oy = oyLo; oy < oyHi; oy++) {
              let xp = at(x, ((s * H + oy + ky - pad) * W + oxLo + kx - pad) * Ci + ci);
              let dyp = at(dy, ((s * OH + oy) * OW + oxLo) * Co + cb);
              for (let ox = oxLo; ox < oxHi; ox++) {
                const xs = v128.load32_splat(xp);
                const xt = v128.load32_splat(xp + next);
                let g = v128.load(dyp);
                a0 = mac(a0, xs, g); c0 = mac(c0, xt, g);
                xp += xStep;
                dyp += dyStep;
              }
            }
            v128.store(at(r0, cb), a0);
            v128.store(at(r1, cb), c0);
          }
            continue;
          }
          // A column alone (the last of an odd K): each accumulator is one dependency chain, so
          // wide blocks matter even more here.
          for (; cb + 16 <= Co && Co - cb != 20; cb += 16) {
            let a0 = v128.load(at(r0, cb)), a1 = v128.load(at(r0, cb), 16), a2 = v128.load(at(r0, cb), 32), a3 = v128.load(at(r0, cb), 48);
            for (let oy = oyLo; oy < oyHi; oy++) {
              let xp = at(x, ((s * H + oy + ky - pad) * W + oxLo + kx - pad) * Ci + ci);
              let dyp = at(dy, ((s * OH + oy) * OW + oxLo) * Co + cb);
              for (let ox = oxLo; ox < oxHi; ox++) {
                const xs = v128.load32_splat(xp);
                let g = v128.load(dyp);
                a0 = mac(a0, xs, g);
                g = v128.load(dyp, 16);
                a1 = mac(a1, xs, g);
                g = v128.load(dyp, 32);
                a2 = mac(a2, xs, g);
                g = v128.load(dyp, 48);
                a3 = mac(a3, xs, g);
                xp += xStep;
                dyp += dyStep;
              }
            }
            v128.store(at(r0, cb), a0);
            v128.store(at(r0, cb), a1, 16);
            v128.store(at(r0, cb), a2, 32);
            v128.store(at(r0, cb), a3, 48);
          }
          for (; Co - cb == 20; cb += 20) {
            let a0 = v128.load(at(r0, cb)), a1 = v128.load(at(r0, cb), 16), a2 = v128.load(at(r0, cb), 32), a3 = v128.load(at(r0, cb), 48), a4 = v128.load(at(r0, cb), 64);
            for (let oy = oyLo; oy < oyHi; oy++) {
              let xp = at(x, ((s * H + oy + ky - pad) * W + oxLo + kx - pad) * Ci + ci);
              let dyp = at(dy, ((s * OH + oy) * OW + oxLo) * Co + cb);
              for (let ox = oxLo; ox < oxHi; ox++) {
                const xs = v128.load32_splat(xp);
                let g = v128.load(dyp);
                a0 = mac(a0, xs, g);
                g = v128.load(dyp, 16);
                a1 = mac(a1, xs, g);
                g = v128.load(dyp, 32);
                a2 = mac(a2, xs, g);
                g = v128.load(dyp, 48);
                a3 = mac(a3, xs, g);
                g = v128.load(dyp, 64);
                a4 = mac(a4, xs, g);
                xp += xStep;
                dyp += dyStep;
              }
            }
            v128.store(at(r0, cb), a0);
            v128.store(at(r0, cb), a1, 16);
            v128.store(at(r0, cb), a2, 32);
            v128.store(at(r0, cb), a3, 48);
            v128.store(at(r0, cb), a4, 64);
          }
          for (; Co - cb == 12; cb += 12) {
            let a0 = v128.load(at(r0, cb)), a1 = v128.load(at(r0, cb), 16), a2 = v128.load(at(r0, cb), 32);
            for (let oy = oyLo; oy < oyHi; oy++) {
              let xp = at(x, ((s * H + oy + ky - pad) * W + oxLo + kx - pad) * Ci + ci);
              let dyp = at(dy, ((s * OH + oy) * OW + oxLo) * Co + cb);
              for (let ox = oxLo; ox < oxHi; ox++) {
                const xs = v128.load32_splat(xp);
                let g = v128.load(dyp);
                a0 = mac(a0, xs, g);
                g = v128.load(dyp, 16);
                a1 = mac(a1, xs, g);
                g = v128.load(dyp, 32);
                a2 = mac(a2, xs, g);
                xp += xStep;
                dyp += dyStep;
              }
            }
            v128.store(at(r0, cb), a0);
            v128.store(at(r0, cb), a1, 16);
            v128.store(at(r0, cb), a2, 32);
          }
          for (; cb + 8 <= Co; cb += 8) {
            let a0 = v128.load(at(r0, cb)), a1 = v128.load(at(r0, cb), 16);
            for (let oy = oyLo; oy < oyHi; oy++) {
              let xp = at(x, ((s * H + oy + ky - pad) * W + oxLo + kx - pad) * Ci + ci);
              let dyp = at(dy, ((s * OH + oy) * OW + oxLo) * Co + cb);
              for (let ox = oxLo; ox < oxHi; ox++) {
                const xs = v128.load32_splat(xp);
                let g = v128.load(dyp);
                a0 = mac(a0, xs, g);
                g = v128.load(dyp, 16);
                a1 = mac(a1, xs, g);
                xp += xStep;
                dyp += dyStep;
              }
            }
            v128.store(at(r0, cb), a0);
            v128.store(at(r0, cb), a1, 16);
          }
          for (; cb < Co; cb += 4) {
            let a0 = v128.load(at(r0, cb));
            for (let oy = oyLo; oy < oyHi; oy++) {
              let xp = at(x, ((s * H + oy + ky - pad) * W + oxLo + kx - pad) * Ci + ci);
              let dyp = at(dy, ((s * OH + oy) * OW + oxLo) * Co + cb);
              for (let ox = oxLo; ox < oxHi; ox++) {
                const xs = v128.load32_splat(xp);
                let g = v128.load(dyp);
                a0 = mac(a0, xs, g);
                xp += xStep;
                dyp += dyStep;
              }
            }
            v128.store(at(r0, cb), a0);
          }
        }
        if (paired) kx++;
      }
    }
  }
}

/** db[c] += Σ_r dy[r, c] over `rows` rows of C (a multiple of 4) channels. */
export function biasGrad(dy: usize, rows: i32, C: i32, db: usize): void {
  for (let cb = 0; cb < C; cb += 4) {
    let a = v128.load(at(db, cb));
    let p = at(dy, cb);
    const step = <usize>C << 2;
    for (let r = 0; r < rows; r++) {
      a = f32x4.add(a, v128.load(p));
      p += step;
    }
    v128.store(at(db, cb), a);
  }
}

/**
 * 2×2 max-pool, stride 2 (floor), 4 channels at a time (C is a multiple of 4):
 * y[n,oy,ox,c] = max of the window; arg[...] = the element index in x of the first maximum in
 * row-major window order (PyTorch's choice on ties). A NaN in the window's first place stays.
 */
export function maxPool2Forward(x: usize, n: i32, H: i32, W: i32, C: i32, y: usize, arg: usize): void {
  const OH = H >> 1;
  const OW = W >> 1;
  const lanes = i32x4(0, 1, 2, 3);
  const right = C;
  const down = W * C;
  let o = 0;
  for (let s = 0; s < n; s++) {
    for (let oy = 0; oy < OH; oy++) {
      for (let ox = 0; ox < OW; ox++) {
        const i00 = ((s * H + 2 * oy) * W + 2 * ox) * C;
        for (let c = 0; c < C; c += 4) {
          const i = i00 + c;
          let m = v128.load(at(x, i));
          let idx = i32x4.add(i32x4.splat(i), lanes);
          let v = v128.load(at(x, i + right));
          let gt = f32x4.gt(v, m);
          m = v128.bitselect(v, m, gt);
          idx = v128.bitselect(i32x4.add(i32x4.splat(i + right), lanes), idx, gt);
          v = v128.load(at(x, i + down));
          gt = f32x4.gt(v, m);
          m = v128.bitselect(v, m, gt);
          idx = v128.bitselect(i32x4.add(i32x4.splat(i + down), lanes), idx, gt);
          v = v128.load(at(x, i + down + right));
          gt = f32x4.gt(v, m);
          m = v128.bitselect(v, m, gt);
          idx = v128.bitselect(i32x4.add(i32x4.splat(i + down + right), lanes), idx, gt);
          v128.store(at(y, o), m);
          v128.store(at(arg, o), idx);
          o += 4;
        }
      }
    }
  }
}

/** dx[arg[i]] = dy[i] for the `count` pooled elements; dx must be zero elsewhere (windows do not overlap). */
export function maxPool2Backward(dy: usize, count: i32, arg: usize, dx: usize): void {
  for (let i = 0; i < count; i++) store<f32>(at(dx, load<i32>(at(arg, i))), load<f32>(at(dy, i)));
}

/** In place: x = max(x, 0), `count` a multiple of 4. NaN stays NaN, so divergence is still seen. */
export function reluForward(x: usize, count: i32): void {
  const zero = f32x4.splat(0);
  for (let i = 0; i < count; i += 4) v128.store(at(x, i), f32x4.max(v128.load(at(x, i)), zero));
}

/** In place: g = y > 0 ? g : 0, where y is the relu's output. */
export function reluBackward(y: usize, g: usize, count: i32): void {
  const zero = f32x4.splat(0);
  for (let i = 0; i < count; i += 4) v128.store(at(g, i), v128.and(v128.load(at(g, i)), f32x4.gt(v128.load(at(y, i)), zero)));
}

/** y[p, c] = x[p, c] for c < Cy, over `pixels` positions: drops channel padding (x has Cx ≥ Cy channels). */
export function copyChannels(x: usize, pixels: i32, Cx: i32, Cy: i32, y: usize): void {
  let xp = x;
  let yp = y;
  const xStep = <usize>Cx << 2;
  const yStep = <usize>Cy << 2;
  for (let q = 0; q < pixels; q++) {
    memory.copy(yp, xp, yStep);
    xp += xStep;
    yp += yStep;
  }
}

/** In place: x[n,p,c] *= mask[n,c] over `pixels` positions per sample (dropout and Dropout2d, and their gradients). */
export function scaleChannels(x: usize, n: i32, pixels: i32, C: i32, mask: usize): void {
  let p = x;
  for (let s = 0; s < n; s++) {
    const m = at(mask, s * C);
    for (let q = 0; q < pixels; q++) {
      for (let cb = 0; cb < C; cb += 4) {
        v128.store(p, f32x4.mul(v128.load(p), v128.load(at(m, cb))));
        p += 16;
      }
    }
  }
}

/** y[n, o] = b[o] + Σ_{i<In} x[n, i]·w[i, o]; x rows have stride xStride, Out is a multiple of 4. */
export function denseForward(x: usize, n: i32, In: i32, xStride: i32, w: usize, b: usize, Out: i32, y: usize): void {
  const wStep = <usize>Out << 2;
  for (let s = 0; s < n; s++) {
    const xr = at(x, s * xStride);
    const yr = at(y, s * Out);
    let ob = 0;
    for (; ob + 16 <= Out; ob += 16) {
      let a0 = v128.load(at(b, ob)), a1 = v128.load(at(b, ob), 16), a2 = v128.load(at(b, ob), 32), a3 = v128.load(at(b, ob), 48);
      let wp = at(w, ob);
      for (let i = 0; i < In; i++) {
        const xs = v128.load32_splat(at(xr, i));
        a0 = mac(a0, xs, v128.load(wp));
        a1 = mac(a1, xs, v128.load(wp, 16));
        a2 = mac(a2, xs, v128.load(wp, 32));
        a3 = mac(a3, xs, v128.load(wp, 48));
        wp += wStep;
      }
      v128.store(at(yr, ob), a0); v128.store(at(yr, ob), a1, 16); v128.store(at(yr, ob), a2, 32); v128.store(at(yr, ob), a3, 48);
    }
    for (; ob < Out; ob += 4) {
      let a0 = v128.load(at(b, ob));
      let wp = at(w, ob);
      for (let i = 0; i < In; i++) {
        a0 = mac(a0, v128.load32_splat(at(xr, i)), v128.load(wp));
        wp += wStep;
      }
      v128.store(at(yr, ob), a0);
    }
  }
}

/** dw[i, o] += Σ_n x[n, i]·dy[n, o]. */
export function denseWeightGrad(x: usize, n: i32, In: i32, xStride: i32, dy: usize, Out: i32, dw: usize): void {
  const xStep = <usize>xStride << 2;
  const dyStep = <usize>Out << 2;
  for (let i = 0; i < In; i++) {
    const row = at(dw, i * Out);
    let ob = 0;
    for (; ob + 16 <= Out; ob += 16) {
      let a0 = v128.load(at(row, ob)), a1 = v128.load(at(row, ob), 16), a2 = v128.load(at(row, ob), 32), a3 = v128.load(at(row, ob), 48);
      let xp = at(x, i);
      let dyp = at(dy, ob);
      for (let s = 0; s < n; s++) {
        const xs = v128.load32_splat(xp);
        a0 = mac(a0, xs, v128.load(dyp));
        a1 = mac(a1, xs, v128.load(dyp, 16));
        a2 = mac(a2, xs, v128.load(dyp, 32));
        a3 = mac(a3, xs, v128.load(dyp, 48));
        xp += xStep;
        dyp += dyStep;
      }
      v128.store(at(row, ob), a0); v128.store(at(row, ob), a1, 16); v128.store(at(row, ob), a2, 32); v128.store(at(row, ob), a3, 48);
    }
    for (; ob < Out; ob += 4) {
      let a0 = v128.load(at(row, ob));
      let xp = at(x, i);
      let dyp = at(dy, ob);
      for (let s = 0; s < n; s++) {
        a0 = mac(a0, v128.load32_splat(xp), v128.load(dyp));
        xp += xStep;
        dyp += dyStep;
      }
      v128.store(at(row, ob), a0);
    }
  }
}

/** dx[n, i] = Σ_o dy[n, o]·w[i, o] for i < In, and 0 in the row's padding up to dxStride. */
export function denseInputGrad(dy: usize, n: i32, Out: i32, w: usize, In: i32, dxStride: i32, dx: usize): void {
  for (let s = 0; s < n; s++) {
    const dyr = at(dy, s * Out);
    for (let i = 0; i < In; i++) {
      const wr = at(w, i * Out);
      let a = f32x4.splat(0);
      for (let ob = 0; ob < Out; ob += 4) a = mac(a, v128.load(at(dyr, ob)), v128.load(at(wr, ob)));
      const sum = (f32x4.extract_lane(a, 0) + f32x4.extract_lane(a, 1)) + (f32x4.extract_lane(a, 2) + f32x4.extract_lane(a, 3));
      store<f32>(at(dx, s * dxStride + i), sum);
    }
    for (let i = In; i < dxStride; i++) store<f32>(at(dx, s * dxStride + i), 0);
  }
}

/**
 * log-softmax + NLL over `classes` logits per row (rows have stride `stride`): returns
 * total + Σ_n loss_n, added in sample order, and writes dz = ∂(Σ loss)/∂z = softmax(z) − onehot(label).
 * labels: one byte per sample.
 */
export function softmaxNll(z: usize, n: i32, classes: i32, stride: i32, labels: usize, dz: usize, total: f64): f64 {
  for (let s = 0; s < n; s++) {
    const zr = at(z, s * stride);
    const dr = at(dz, s * stride);
    let m = load<f32>(zr);
    for (let c = 1; c < classes; c++) m = max(m, load<f32>(at(zr, c)));
    let sum: f64 = 0;
    for (let c = 0; c < classes; c++) sum += Math.exp(<f64>load<f32>(at(zr, c)) - <f64>m);
    const lse = <f64>m + Math.log(sum);
    const label = <i32>load<u8>(labels + <usize>s);
    total += lse - <f64>load<f32>(at(zr, label));
    for (let c = 0; c < classes; c++) {
      // Probabilities below 2^-64 are flushed to 0: their gradient is negligible, and the float32
      // denormals they would become make every later multiply ~100× slower (wasm cannot flush them).
      let p = Math.exp(<f64>load<f32>(at(zr, c)) - lse);
      if (p < 5.421010862427522e-20) p = 0;
      store<f32>(at(dr, c), <f32>(c == label ? p - 1 : p));
    }
    for (let c = classes; c < stride; c++) store<f32>(at(dr, c), 0);
  }
  return total;
}

/** log-softmax rows in place (evaluation): z − logsumexp(z). */
export function logSoftmax(z: usize, n: i32, classes: i32, stride: i32): void {
  for (let s = 0; s < n; s++) {
    const zr = at(z, s * stride);
    let m = load<f32>(zr);
    for (let c = 1; c < classes; c++) m = max(m, load<f32>(at(zr, c)));
    let sum: f64 = 0;
    for (let c = 0; c < classes; c++) sum += Math.exp(<f64>load<f32>(at(zr, c)) - <f64>m);
    const lse = <f64>m + Math.log(sum);
    for (let c = 0; c < classes; c++) store<f32>(at(zr, c), <f32>(<f64>load<f32>(at(zr, c)) - lse));
  }
}
