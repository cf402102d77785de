/**
 * The WGSL compute shaders of the fused GPU step (fused.ts), one generator per kernel. Every shape
 * is baked into the source as a constant, so each shader is specialised to its layer and chunk.
 *
 * Layouts: activations NHWC, [n, H, W, C] flat; conv weights [K, K, Ci, Co]; dense weights
 * [In, Out]; every parameter and its gradient at its offset in one flat vector (the model's
 * canonical order). Every sum runs over its terms in a fixed order and no two threads write one
 * element, so a kernel gives the same bits every time on a given GPU and driver: deterministic mode
 * needs nothing more. Sums over samples (weight gradients) are taken per sample first and then
 * added in sample order by `sumOverSamples`, which keeps the GPU busy without atomics.
 */

/** Threads per workgroup for every kernel. */
export const WORKGROUP = 64;
/** WebGPU's guaranteed maximum workgroups along one dimension; larger dispatches wrap into y. */
export const MAX_GROUPS_X = 65535;

export interface Kernel {
  /** A name for pipelines and error messages, e.g. "conv1 forward". */
  label: string;
  code: string;
  /** Threads to run (one per output element). */
  threads: number;
  /** Binding i is the buffer named bindings[i]; read-only unless listed in `writes`. */
  bindings: string[];
  writes: string[];
}

const u = (v: number): string => `${Math.trunc(v)}u`;
const i = (v: number): string => `${Math.trunc(v)}i`;

/** Declarations of the bindings and the thread index, with an early return past `threads`. */
function shader(bindings: string[], writes: string[], threads: number, body: string, types: Record<string, string> = {}): string {
  const decls = bindings
    .map((name, b) => `@group(0) @binding(${b}) var<storage, ${writes.includes(name) ? 'read_write' : 'read'}> ${name}: array<${types[name] ?? 'f32'}>;`)
    .join('\n');
  return `${decls}
@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let t = gid.x + gid.y * ${u(MAX_GROUPS_X * WORKGROUP)};
  if (t >= ${u(threads)}) { return; }
${body}
}
`;
}

export interface ConvShape {
  n: number;
  h: number;
  w: number;
  ci: number;
  k: number;
  pad: number;
  co: number;
  oh: number;
  ow: number;
}

/** y[b,oy,ox,o] = bias[o] + Σ_{ky,kx,c} x[b, oy+ky−pad, ox+kx−pad, c] · w[ky,kx,c,o]; x read from sample xOff on. */
export function convForward(label: string, s: ConvShape, wOff: number, bOff: number, xOff: number): Kernel {
  const threads = s.n * s.oh * s.ow * s.co;
  const body = `
  let o = t % ${u(s.co)};
  let p = t / ${u(s.co)};
  let ox = i32(p % ${u(s.ow)});
  let oy = i32((p / ${u(s.ow)}) % ${u(s.oh)});
  let b = p / ${u(s.ow * s.oh)} + ${u(xOff)};
  var acc = 0.0;
  for (var ky = 0i; ky < ${i(s.k)}; ky++) {
    let iy = oy + ky - ${i(s.pad)};
    if (iy < 0i || iy >= ${i(s.h)}) { continue; }
    for (var kx = 0i; kx < ${i(s.k)}; kx++) {
      let ix = ox + kx - ${i(s.pad)};
      if (ix < 0i || ix >= ${i(s.w)}) { continue; }
      let xb = ((b * ${u(s.h)} + u32(iy)) * ${u(s.w)} + u32(ix)) * ${u(s.ci)};
      let wb = ${u(wOff)} + (u32(ky * ${i(s.k)} + kx) * ${u(s.ci)}) * ${u(s.co)} + o;
      for (var c = 0u; c < ${u(s.ci)}; c++) {
        acc = acc + x[xb + c] * params[wb + c * ${u(s.co)}];
      }
    }
  }
  y[t] = acc + params[${u(bOff)} + o];`;
  return { label, code: shader(['params', 'x', 'y'], ['y'], threads, body), threads, bindings: ['params', 'x', 'y'], writes: ['y'] };
}

/** partial[b, (ky,kx,c,o)] = Σ_{oy,ox} x[b, oy+ky−pad, ox+kx−pad, c] · dy[b,oy,ox,o]. */
export function convFilterPartial(label: string, s: ConvShape, xOff: number): Kernel {
  const len = s.k * s.k * s.ci * s.co;
  const threads = s.n * len;
  const body = `
  let j = t % ${u(len)};
  let b = t / ${u(len)};
  let o = j % ${u(s.co)};
  let c = (j / ${u(s.co)}) % ${u(s.ci)};
  let kk = j / ${u(s.co * s.ci)};
  let kx = i32(kk % ${u(s.k)});
  let ky = i32(kk / ${u(s.k)});
  var acc = 0.0;
  for (var oy = 0i; oy < ${i(s.oh)}; oy++) {
    let iy = oy + ky - ${i(s.pad)};
    if (iy < 0i || iy >= ${i(s.h)}) { continue; }
    for (var ox = 0i; ox < ${i(s.ow)}; ox++) {
      let ix = ox + kx - ${i(s.pad)};
      if (ix < 0i || ix >= ${i(s.w)}) { continue; }
      acc = acc + x[(((b + ${u(xOff)}) * ${u(s.h)} + u32(iy)) * ${u(s.w)} + u32(ix)) * ${u(s.ci)} + c]
                * dy[((b * ${u(s.oh)} + u32(oy)) * ${u(s.ow)} + u32(ox)) * ${u(s.co)} + o];
    }
  }
  partial[t] = acc;`;
  return { label, code: shader(['x', 'dy', 'partial'], ['partial'], threads, body), threads, bindings: ['x', 'dy', 'partial'], writes: ['partial'] };
}

/** partial[b, o] = Σ_{pixels} dy[b, pixel, o]: a bias gradient per sample. */
export function biasPartial(label: string, n: number, pixels: number, co: number): Kernel {
  const threads = n * co;
  const body = `
  let o = t % ${u(co)};
  let b = t / ${u(co)};
  var acc = 0.0;
  for (var p = 0u; p < ${u(pixels)}; p++) {
    acc = acc + dy[(b * ${u(pixels)} + p) * ${u(co)} + o];
  }
  partial[t] = acc;`;
  return { label, code: shader(['dy', 'partial'], ['partial'], threads, body), threads, bindings: ['dy', 'partial'], writes: ['partial'] };
}

/**
 * grads[off + j] = Σ_b partial[b, j], b in order (added to what is there when `accumulate`: the
 * chunks of a large shard follow one another).
 */
export function sumOverSamples(label: string, n: number, len: number, gradOff: number, accumulate: boolean): Kernel {
  const body = `
  var acc = 0.0;
  for (var b = 0u; b < ${u(n)}; b++) {
    acc = acc + partial[b * ${u(len)} + t];
  }
  grads[${u(gradOff)} + t] = ${accumulate ? `grads[${u(gradOff)} + t] + acc` : 'acc'};`;
  return { label, code: shader(['partial', 'grads'], ['grads'], len, body), threads: len, bindings: ['partial', 'grads'], writes: ['grads'] };
}

/** dx[b,iy,ix,c] = Σ_{ky,kx,o} dy[b, iy−ky+pad, ix−kx+pad, o] · w[ky,kx,c,o]. */
export function convInputGrad(label: string, s: ConvShape, wOff: number): Kernel {
  const threads = s.n * s.h * s.w * s.ci;
  const body = `
  let c = t % ${u(s.ci)};
  let p = t / ${u(s.ci)};
  let ix = i32(p % ${u(s.w)});
  let iy = i32((p / ${u(s.w)}) % ${u(s.h)});
  let b = p / ${u(s.w * s.h)};
  var acc = 0.0;
  for (var ky = 0i; ky < ${i(s.k)}; ky++) {
    let oy = iy - ky + ${i(s.pad)};
    if (oy < 0i || oy >= ${i(s.oh)}) { continue; }
    for (var kx = 0i; kx < ${i(s.k)}; kx++) {
      let ox = ix - kx + ${i(s.pad)};
      if (ox < 0i || ox >= ${i(s.ow)}) { continue; }
      let db = ((b * ${u(s.oh)} + u32(oy)) * ${u(s.ow)} + u32(ox)) * ${u(s.co)};
      let wb = ${u(wOff)} + (u32(ky * ${i(s.k)} + kx) * ${u(s.ci)} + c) * ${u(s.co)};
      for (var o = 0u; o < ${u(s.co)}; o++) {
        acc = acc + dy[db + o] * params[wb + o];
      }
    }
  }
  dx[t] = acc;`;
  return { label, code: shader(['params', 'dy', 'dx'], ['dx'], threads, body), threads, bindings: ['params', 'dy', 'dx'], writes: ['dx'] };
}

/** 2×2 max-pool, stride 2 (odd edges dropped); arg[out] = which of the four won (the first of equals). */
export function maxPoolForward(label: string, n: number, h: number, w: number, c: number): Kernel {
  const oh = h >> 1;
  const ow = w >> 1;
  const threads = n * oh * ow * c;
  const body = `
  let ch = t % ${u(c)};
  let p = t / ${u(c)};
  let ox = p % ${u(ow)};
  let oy = (p / ${u(ow)}) % ${u(oh)};
  let b = p / ${u(ow * oh)};
  let base = ((b * ${u(h)} + 2u * oy) * ${u(w)} + 2u * ox) * ${u(c)} + ch;
  var best = x[base];
  var at = 0u;
  let v1 = x[base + ${u(c)}];
  if (v1 > best) { best = v1; at = 1u; }
  let v2 = x[base + ${u(w * c)}];
  if (v2 > best) { best = v2; at = 2u; }
  let v3 = x[base + ${u(w * c + c)}];
  if (v3 > best) { best = v3; at = 3u; }
  y[t] = best;
  arg[t] = at;`;
  return { label, code: shader(['x', 'y', 'arg'], ['y', 'arg'], threads, body, { arg: 'u32' }), threads, bindings: ['x', 'y', 'arg'], writes: ['y', 'arg'] };
}

/** dx = dy routed to each window's winner; 0 elsewhere (odd edges included). */
export function maxPoolBackward(label: string, n: number, h: number, w: number, c: number): Kernel {
  const oh = h >> 1;
  const ow = w >> 1;
  const threads = n * h * w * c;
  const body = `
  let ch = t % ${u(c)};
  let p = t / ${u(c)};
  let x = p % ${u(w)};
  let y = (p / ${u(w)}) % ${u(h)};
  let b = p / ${u(w * h)};
  let oy = y / 2u;
  let ox = x / 2u;
  var g = 0.0;
  if (oy < ${u(oh)} && ox < ${u(ow)}) {
    let o = ((b * ${u(oh)} + oy) * ${u(ow)} + ox) * ${u(c)} + ch;
    if (arg[o] == (y % 2u) * 2u + x % 2u) { g = dy[o]; }
  }
  dx[t] = g;`;
  return { label, code: shader(['dy', 'arg', 'dx'], ['dx'], threads, body, { arg: 'u32' }), threads, bindings: ['dy', 'arg', 'dx'], writes: ['dx'] };
}

export function reluForward(label: string, count: number): Kernel {
  return { label, code: shader(['x', 'y'], ['y'], count, '  y[t] = max(x[t], 0.0);'), threads: count, bindings: ['x', 'y'], writes: ['y'] };
}

/** dx = dy where the input was positive (tfjs's relu gradient: dy · step(x)). */
export function reluBackward(label: string, count: number): Kernel {
  const body = '  dx[t] = select(0.0, dy[t], x[t] > 0.0);';
  return { label, code: shader(['x', 'dy', 'dx'], ['dx'], count, body), threads: count, bindings: ['x', 'dy', 'dx'], writes: ['dx'] };
}

/**
 * In place: v[b, pixel, c] ·= mask[maskOff + b, c] (Dropout2d over a feature map, or dropout on
 * features with one pixel). The forward and the backward pass are the same kernel.
 */
export function scaleByMask(label: string, n: number, pixels: number, c: number, maskOff: number): Kernel {
  const threads = n * pixels * c;
  const body = `
  let ch = t % ${u(c)};
  let b = t / ${u(pixels * c)};
  v[t] = v[t] * mask[(b + ${u(maskOff)}) * ${u(c)} + ch];`;
  return { label, code: shader(['mask', 'v'], ['v'], threads, body), threads, bindings: ['mask', 'v'], writes: ['v'] };
}

/** y[b,o] = bias[o] + Σ_i x[b,i] · w[i,o]. */
export function denseForward(label: string, n: number, inUnits: number, outUnits: number, wOff: number, bOff: number, xOff: number): Kernel {
  const threads = n * outUnits;
  const body = `
  let o = t % ${u(outUnits)};
  let b = t / ${u(outUnits)} + ${u(xOff)};
  var acc = 0.0;
  for (var k = 0u; k < ${u(inUnits)}; k++) {
    acc = acc + x[b * ${u(inUnits)} + k] * params[${u(wOff)} + k * ${u(outUnits)} + o];
  }
  y[t] = acc + params[${u(bOff)} + o];`;
  return { label, code: shader(['params', 'x', 'y'], ['y'], threads, body), threads, bindings: ['params', 'x', 'y'], writes: ['y'] };
}

/** grads[w + (i,o)] (+)= Σ_b x[b,i] · dy[b,o], b in order. */
export function denseWeightGrad(label: string, n: number, inUnits: number, outUnits: number, gradOff: number, xOff: number, accumulate: boolean): Kernel {
  const threads = inUnits * outUnits;
  const body = `
  let o = t % ${u(outUnits)};
  let k = t / ${u(outUnits)};
  var acc = 0.0;
  for (var b = 0u; b < ${u(n)}; b++) {
    acc = acc + x[(b + ${u(xOff)}) * ${u(inUnits)} + k] * dy[b * ${u(outUnits)} + o];
  }
  grads[${u(gradOff)} + t] = ${accumulate ? `grads[${u(gradOff)} + t] + acc` : 'acc'};`;
  return { label, code: shader(['x', 'dy', 'grads'], ['grads'], threads, body), threads, bindings: ['x', 'dy', 'grads'], writes: ['grads'] };
}

/** grads[bias + o] (+)= Σ_b dy[b,o], b in order. */
export function denseBiasGrad(label: string, n: number, outUnits: number, gradOff: number, accumulate: boolean): Kernel {
  const body = `
  var acc = 0.0;
  for (var b = 0u; b < ${u(n)}; b++) {
    acc = acc + dy[b * ${u(outUnits)} + t];
  }
  grads[${u(gradOff)} + t] = ${accumulate ? `grads[${u(gradOff)} + t] + acc` : 'acc'};`;
  return { label, code: shader(['dy', 'grads'], ['grads'], outUnits, body), threads: outUnits, bindings: ['dy', 'grads'], writes: ['grads'] };
}

/** dx[b,i] = Σ_o dy[b,o] · w[i,o]. */
export function denseInputGrad(label: string, n: number, inUnits: number, outUnits: number, wOff: number): Kernel {
  const threads = n * inUnits;
  const body = `
  let k = t % ${u(inUnits)};
  let b = t / ${u(inUnits)};
  var acc = 0.0;
  for (var o = 0u; o < ${u(outUnits)}; o++) {
    acc = acc + dy[b * ${u(outUnits)} + o] * params[${u(wOff)} + k * ${u(outUnits)} + o];
  }
  dx[t] = acc;`;
  return { label, code: shader(['params', 'dy', 'dx'], ['dx'], threads, body), threads, bindings: ['params', 'dy', 'dx'], writes: ['dx'] };
}

/**
 * Per sample: the NLL of log-softmax(z) at the label, into loss[lossOff + b], and its gradient
 * dz = softmax(z) − onehot(label). log-softmax as tfjs computes it: z − max − log Σ exp(z − max).
 */
export function softmaxNll(label: string, n: number, classes: number, sampleOff: number): Kernel {
  const body = `
  let base = t * ${u(classes)};
  var m = z[base];
  for (var c = 1u; c < ${u(classes)}; c++) { m = max(m, z[base + c]); }
  var s = 0.0;
  for (var c = 0u; c < ${u(classes)}; c++) { s = s + exp(z[base + c] - m); }
  let lse = m + log(s);
  let label = labels[t + ${u(sampleOff)}];
  loss[t + ${u(sampleOff)}] = lse - z[base + label];
  for (var c = 0u; c < ${u(classes)}; c++) {
    dz[base + c] = exp(z[base + c] - m) / s - select(0.0, 1.0, c == label);
  }`;
  return {
    label,
    code: shader(['z', 'labels', 'loss', 'dz'], ['loss', 'dz'], n, body, { labels: 'u32' }),
    threads: n,
    bindings: ['z', 'labels', 'loss', 'dz'],
    writes: ['loss', 'dz'],
  };
}

/** out[b,c] = z − max − log Σ exp(z − max): log-probabilities for evaluation. */
export function logSoftmax(label: string, n: number, classes: number): Kernel {
  const body = `
  let base = t * ${u(classes)};
  var m = z[base];
  for (var c = 1u; c < ${u(classes)}; c++) { m = max(m, z[base + c]); }
  var s = 0.0;
  for (var c = 0u; c < ${u(classes)}; c++) { s = s + exp(z[base + c] - m); }
  let l = log(s);
  for (var c = 0u; c < ${u(classes)}; c++) { out[base + c] = z[base + c] - m - l; }`;
  return { label, code: shader(['z', 'out'], ['out'], n, body), threads: n, bindings: ['z', 'out'], writes: ['out'] };
}
