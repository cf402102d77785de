/**
 * The fused CPU engine: a model's whole training step (forward, log-softmax + NLL, backward) run
 * by the SIMD kernels of assembly/kernels.ts on buffers laid out once in one WebAssembly memory.
 *
 * Compared with tfjs's wasm backend this removes ~100 kernel dispatches, tensor allocations and
 * copies per step, and runs every gradient kernel in SIMD. It serves the layer kinds of
 * engine/layers.ts; `createFusedNetwork` returns undefined for a network it cannot run, and the
 * caller uses tfjs instead.
 */
import type { LayerSpec } from '../layers.js';
import { growTo, instantiateSimd, simdAvailable } from './module.js';

/** What the engine needs to know of a model (models/types.ts's ModelDef has all of it). */
export interface NetworkDescription {
  layers: readonly LayerSpec[];
  /** Canonical order: the flat weight and gradient vectors follow it. Conv [k,k,in,out], dense [in,out]. */
  params: readonly { name: string; shape: readonly number[] }[];
  dropouts: readonly { name: string; units: number }[];
}

export interface FusedNetwork {
  /**
   * Σ over the shard of ∂NLL/∂w written into `gradOut` (canonical order); returns Σ NLL.
   * x: normalised images [n, H, W, C]; masks: per dropout layer, [n × units] of 0 and 1/(1−p).
   * The backward pass finishes the last layers first: each time a tail gradOut[from…] is final,
   * `onTailReady(from, lossSum)` is called (while the earlier layers are still being computed), so
   * that a worker can start sending it.
   */
  trainStep(
    weights: Float32Array,
    x: Float32Array,
    labels: Uint8Array,
    masks: readonly Float32Array[],
    gradOut: Float32Array,
    onTailReady?: (from: number, lossSum: number) => void,
  ): number;
  /** Log-probabilities [n × classes] of normalised images x (dropout inactive). */
  forward(weights: Float32Array, x: Float32Array, n: number): Float32Array;
  /**
   * trainStep and forward as generators that pause after each chunk of samples (they return what
   * those return): a caller can let its event loop run between chunks, so that a long step never
   * holds up heartbeats. The network is not re-entrant: finish one before starting another.
   */
  trainStepInChunks(...args: Parameters<FusedNetwork['trainStep']>): Generator<void, number>;
  forwardInChunks(...args: Parameters<FusedNetwork['forward']>): Generator<void, Float32Array>;
}

/** Per-sample shape of an activation; `cp` is the channel (or feature) count as stored, padded to 4. */
interface Shape {
  h: number;
  w: number;
  c: number;
  cp: number;
}

const roundUp4 = (v: number): number => (v + 3) & ~3;
const FLOAT = 4;
const ALIGN = 64;

/** One activation buffer and its gradient, `perSample` floats per sample. */
interface Slot {
  perSample: number;
  act: number;
  grad: number;
}

/** A parameter as the kernels store it: padded, with a gradient buffer of the same layout. */
interface PackedParam {
  index: number; // in canonical order
  offset: number; // in the flat weight vector
  /** floats in the flat weight vector (unpadded) */
  length: number;
  /** floats in the packed layout */
  size: number;
  ptr: number;
  gradPtr: number;
  pack(src: Float32Array, dst: Float32Array): void;
  unpack(src: Float32Array, dst: Float32Array): void;
}

type Op = {
  forward(n: number, training: boolean): void;
  backward(n: number): void;
  /** The parameters whose gradients are final once `backward` has run. */
  params?: PackedParam[];
};

export function fusedEngineAvailable(): boolean {
  return simdAvailable();
}

/** Wraps each op's passes to add their milliseconds to `profile`, under the layer's name. */
function timedOp(op: Op, label: string, profile: Map<string, number>): Op {
  const timed = <A extends unknown[]>(key: string, f: (...args: A) => void) => (...args: A): void => {
    const t0 = performance.now();
    f(...args);
    profile.set(key, (profile.get(key) ?? 0) + performance.now() - t0);
  };
  return { ...op, forward: timed(`${label} forward`, op.forward), backward: timed(`${label} backward`, op.backward) };
}

/** Copies [rows × cols] into [rows × colsPadded] (and back), for dense weights and biases; row by row. */
function padRows(rows: number, cols: number, colsPadded: number): Pick<PackedParam, 'pack' | 'unpack'> {
  return {
    pack(src, dst) {
      for (let r = 0; r < rows; r++) dst.set(src.subarray(r * cols, (r + 1) * cols), r * colsPadded);
    },
    unpack(src, dst) {
      for (let r = 0; r < rows; r++) dst.set(src.subarray(r * colsPadded, r * colsPadded + cols), r * cols);
    },
  };
}

/** Conv weights [K,K,Ci,Co] ↔ [K,K,CiP,CoP]: rows of Co, with CiP − Ci rows of zeros after each kernel tap. */
function padConv(K: number, ci: number, co: number, cip: number, cop: number): Pick<PackedParam, 'pack' | 'unpack'> {
  if (ci === cip) return padRows(K * K * ci, co, cop);
  const tap = padRows(ci, co, cop);
  return {
    pack(src, dst) {
      for (let k = 0; k < K * K; k++) tap.pack(src.subarray(k * ci * co, (k + 1) * ci * co), dst.subarray(k * cip * cop, (k * cip + ci) * cop));
    },
    unpack(src, dst) {
      for (let k = 0; k < K * K; k++) tap.unpack(src.subarray(k * cip * cop, (k * cip + ci) * cop), dst.subarray(k * ci * co, (k + 1) * ci * co));
    },
  };
}

/**
 * Builds the fused engine for `net` on inputs of `inputShape` [H, W, C], or returns undefined where
 * SIMD is unavailable or the network uses something the kernels do not serve.
 */
export interface FusedOptions {
  /**
   * Samples taken through the whole network at a time. A chunk's activations and gradients stay
   * in the core's own L2 cache; the weight gradients accumulate over the chunks in sample order,
   * so the result is the same bits whatever the chunk size.
   */
  chunk?: number;
  /** Each layer's forward and backward milliseconds accumulate here, e.g. "conv2 backward" (benchmarks). */
  profile?: Map<string, number>;
}

/** Default samples per chunk: a chunk of net fits a core's L2 cache (chunk sizes 4–32 timed the same here, within noise). */
export const DEFAULT_CHUNK = 8;

export function createFusedNetwork(
  net: NetworkDescription,
  inputShape: readonly [number, number, number],
  { chunk = DEFAULT_CHUNK, profile }: FusedOptions = {},
): FusedNetwork | undefined {
  if (!simdAvailable()) return undefined;
  const paramIndex = new Map(net.params.map((p, i) => [p.name, i]));
  const paramOffsets: number[] = [];
  const paramLengths: number[] = [];
  let totalParams = 0;
  for (const p of net.params) {
    paramOffsets.push(totalParams);
    paramLengths.push(p.shape.reduce((a, b) => a * b, 1));
    totalParams += paramLengths[paramLengths.length - 1];
  }
  const dropoutIndex = new Map(net.dropouts.map((d, i) => [d.name, i]));

  // Layout: the kernels' static data, then the parameters (and their gradients), then the
  // per-sample buffers sized for `capacity`.
  const inst = instantiateSimd(0);
  const kernels = inst.kernels;
  let fixedBytes = Math.ceil(inst.kernels.heapBase() / ALIGN) * ALIGN;
  const allocFixed = (floats: number): number => {
    const ptr = fixedBytes;
    fixedBytes += Math.ceil((floats * FLOAT) / ALIGN) * ALIGN;
    return ptr;
  };
  const packed: PackedParam[] = [];
  const turnedConvWeights: { from: PackedParam; ptr: number; zeroBias: number; K: number; ci: number; cip: number; cop: number }[] = [];
  // Per-sample buffers are described now and placed when the capacity (samples per shard) is known.
  const slots: Slot[] = [];
  const newSlot = (perSample: number): Slot => {
    const slot = { perSample: roundUp4(perSample), act: 0, grad: 0 };
    slots.push(slot);
    return slot;
  };
  const perSampleInts: { perSample: number; ptr: number }[] = [];
  const masks: { index: number; units: number; cp: number; ptr: number }[] = [];

  const addParam = (name: string, packedSize: number, codec: Pick<PackedParam, 'pack' | 'unpack'>): PackedParam | undefined => {
    const index = paramIndex.get(name);
    if (index === undefined) return undefined;
    const p: PackedParam = { index, offset: paramOffsets[index], length: paramLengths[index], size: packedSize, ptr: allocFixed(packedSize), gradPtr: 0, ...codec };
    packed.push(p);
    return p;
  };

  const k = () => kernels;
  const ops: Op[] = [];
  let shape: Shape = { h: inputShape[0], w: inputShape[1], c: inputShape[2], cp: inputShape[2] };
  const input = newSlot(shape.h * shape.w * shape.cp);
  let current = input;
  let flat = false;
  let firstParamLayer = true;
  let classes = 0;

  const labels: string[] = [];
  let lastNamed = 'input';
  for (const [li, l] of net.layers.entries()) {
    const s = shape;
    const opsBefore = ops.length;
    const from = current;
    switch (l.kind) {
      case 'conv': {
        const w = net.params[paramIndex.get(`${l.name}.weight`) ?? -1];
        if (flat || !w || w.shape.length !== 4 || w.shape[0] !== w.shape[1] || w.shape[2] !== s.c) return undefined;
        const K = w.shape[0];
        const co = w.shape[3];
        const cop = roundUp4(co);
        const pad = l.pad === 'same' ? (K - 1) / 2 : 0;
        if (!Number.isInteger(pad)) return undefined;
        // An input whose channels are padded (conv2's 10 to 12) is copied without the padding first:
        // the convolution then spends no multiplications on padding lanes, and its weights are
        // packed without padding rows.
        const compact = s.c < s.cp ? newSlot(s.h * s.w * s.c) : undefined;
        const ci = compact ? s.c : s.cp;
        const convIn = (): number => (compact ? compact.act : from.act);
        const wp = addParam(`${l.name}.weight`, K * K * ci * cop, padConv(K, s.c, co, ci, cop));
        const bp = addParam(`${l.name}.bias`, cop, padRows(1, co, cop));
        if (!wp || !bp) return undefined;
        // The input gradient is a convolution of dy with the weights turned 180° and in/out swapped;
        // it is written in the input's padded layout, its padding lanes 0.
        const needsInputGrad = !firstParamLayer;
        const turned = needsInputGrad ? { from: wp, ptr: allocFixed(K * K * cop * s.cp), zeroBias: allocFixed(s.cp), K, ci, cip: s.cp, cop } : undefined;
        if (turned) turnedConvWeights.push(turned);
        const out: Shape = { h: s.h + 2 * pad - K + 1, w: s.w + 2 * pad - K + 1, c: co, cp: cop };
        const to = newSlot(out.h * out.w * cop);
        ops.push({
          forward: (n) => {
            if (compact) k().copyChannels(from.act, n * s.h * s.w, s.cp, s.c, compact.act);
            k().convForward(convIn(), n, s.h, s.w, ci, wp.ptr, bp.ptr, K, pad, cop, to.act);
          },
          backward: (n) => {
            k().convFilterGrad(convIn(), n, s.h, s.w, ci, s.c, to.grad, K, pad, cop, wp.gradPtr);
            k().biasGrad(to.grad, n * out.h * out.w, cop, bp.gradPtr);
            if (turned) k().convForward(to.grad, n, out.h, out.w, cop, turned.ptr, turned.zeroBias, K, K - 1 - pad, s.cp, from.grad);
          },
          params: [wp, bp],
        });
        shape = out;
        current = to;
        firstParamLayer = false;
        break;
      }
      case 'maxPool2': {
        if (flat || s.cp % 4 !== 0) return undefined;
        const out: Shape = { h: s.h >> 1, w: s.w >> 1, c: s.c, cp: s.cp };
        const to = newSlot(out.h * out.w * s.cp);
        const arg = { perSample: to.perSample, ptr: 0 };
        perSampleInts.push(arg);
        ops.push({
          forward: (n) => k().maxPool2Forward(from.act, n, s.h, s.w, s.cp, to.act, arg.ptr),
          backward: (n) => {
            new Float32Array(inst.memory.buffer, from.grad, n * from.perSample).fill(0);
            k().maxPool2Backward(to.grad, n * out.h * out.w * s.cp, arg.ptr, from.grad);
          },
        });
        shape = out;
        current = to;
        break;
      }
      case 'relu': {
        if (s.cp % 4 !== 0) return undefined;
        const count = s.h * s.w * s.cp;
        ops.push({
          forward: (n) => k().reluForward(from.act, n * count),
          backward: (n) => k().reluBackward(from.act, from.grad, n * count),
        });
        break;
      }
      case 'dropout2d':
      case 'dropout': {
        const index = dropoutIndex.get(l.name);
        if (index === undefined || s.cp % 4 !== 0 || net.dropouts[index].units !== s.c || (l.kind === 'dropout') !== flat) return undefined;
        const mask = { index, units: s.c, cp: s.cp, ptr: 0 };
        masks.push(mask);
        const pixels = s.h * s.w;
        ops.push({
          forward: (n, training) => {
            if (training) k().scaleChannels(from.act, n, pixels, s.cp, mask.ptr);
          },
          backward: (n) => k().scaleChannels(from.grad, n, pixels, s.cp, mask.ptr),
        });
        break;
      }
      case 'flatten': {
        // NHWC is already flat in memory; channel padding inside would break the feature order.
        if (s.c !== s.cp) return undefined;
        shape = { h: 1, w: 1, c: s.h * s.w * s.c, cp: s.h * s.w * s.c };
        flat = true;
        break;
      }
      case 'dense': {
        const w = net.params[paramIndex.get(`${l.name}.weight`) ?? -1];
        if (!flat || !w || w.shape.length !== 2 || w.shape[0] !== s.c) return undefined;
        const inUnits = s.c;
        const outUnits = w.shape[1];
        const outP = roundUp4(outUnits);
        const wp = addParam(`${l.name}.weight`, inUnits * outP, padRows(inUnits, outUnits, outP));
        const bp = addParam(`${l.name}.bias`, outP, padRows(1, outUnits, outP));
        if (!wp || !bp) return undefined;
        const needsInputGrad = !firstParamLayer;
        const to = newSlot(outP);
        const xStride = s.cp;
        ops.push({
          forward: (n) => k().denseForward(from.act, n, inUnits, xStride, wp.ptr, bp.ptr, outP, to.act),
          backward: (n) => {
            k().denseWeightGrad(from.act, n, inUnits, xStride, to.grad, outP, wp.gradPtr);
            k().biasGrad(to.grad, n, outP, bp.gradPtr);
            if (needsInputGrad) k().denseInputGrad(to.grad, n, outP, wp.ptr, inUnits, xStride, from.grad);
          },
          params: [wp, bp],
        });
        shape = { h: 1, w: 1, c: outUnits, cp: outP };
        current = to;
        firstParamLayer = false;
        break;
      }
      case 'logSoftmax':
        if (!flat || li !== net.layers.length - 1) return undefined;
        classes = s.c;
        break;
      case 'tap':
        break;
    }
    if ('name' in l) lastNamed = l.name;
    if (ops.length > opsBefore) labels.push('name' in l ? `${l.name} (${l.kind})` : `${l.kind} after ${lastNamed}`);
  }
  if (profile) ops.forEach((op, i) => (ops[i] = timedOp(op, labels[i], profile)));
  if (classes === 0 || packed.length !== net.params.length) return undefined;
  const logits = current;
  const logitStride = shape.cp;

  // Gradients of the parameters in one block, zeroed with one fill per step.
  const gradStart = fixedBytes;
  for (const p of packed) p.gradPtr = allocFixed(p.size);
  const gradFloats = (fixedBytes - gradStart) / FLOAT;

  // Which parameter holds flat index i, and which are done in this backward pass.
  const paramAt = (i: number): number => {
    let j = paramOffsets.length - 1;
    while (paramOffsets[j] > i) j--;
    return j;
  };
  const finished = new Set<number>();

  let capacity = 0;
  let labelsPtr = 0;
  const ensureCapacity = (n: number): void => {
    if (n <= capacity) return;
    capacity = Math.max(n, capacity);
    let bytes = fixedBytes;
    const place = (floats: number): number => {
      const ptr = bytes;
      bytes += Math.ceil((floats * FLOAT) / ALIGN) * ALIGN;
      return ptr;
    };
    for (const slot of slots) {
      slot.act = place(slot.perSample * capacity);
      slot.grad = place(slot.perSample * capacity);
    }
    for (const a of perSampleInts) a.ptr = place(a.perSample * capacity);
    for (const m of masks) m.ptr = place(m.cp * capacity);
    labelsPtr = place(Math.ceil(capacity / FLOAT));
    growTo(inst.memory, bytes);
  };

  const inputSize = inputShape[0] * inputShape[1] * inputShape[2];

  /** Packs the weights for the kernels, with buffers for `samples` per chunk; returns the memory's view. */
  const loadWeights = (weights: Float32Array, samples: number): Float32Array => {
    if (weights.length !== totalParams) throw new Error(`expected ${totalParams} weights, got ${weights.length}`);
    ensureCapacity(samples);
    const mem = new Float32Array(inst.memory.buffer);
    for (const p of packed) {
      p.pack(weights.subarray(p.offset, p.offset + p.length), mem.subarray(p.ptr / FLOAT, p.ptr / FLOAT + p.size));
    }
    for (const t of turnedConvWeights) {
      // w [ky,kx,ci,co] → turned [K−1−ky, K−1−kx, co, cip]; the padding rows ci…cip stay 0.
      const src = t.from.ptr / FLOAT;
      const dst = t.ptr / FLOAT;
      const last = t.K * t.K - 1;
      for (let kk = 0; kk <= last; kk++)
        for (let i = 0; i < t.ci; i++)
          for (let o = 0; o < t.cop; o++) mem[dst + (last - kk) * t.cop * t.cip + o * t.cip + i] = mem[src + kk * t.ci * t.cop + i * t.cop + o];
    }
    return mem;
  };

  const drain = <T>(steps: Generator<void, T>): T => {
    for (;;) {
      const r = steps.next();
      if (r.done) return r.value;
    }
  };

  const network: FusedNetwork = {
    trainStep(...args) {
      return drain(network.trainStepInChunks(...args));
    },

    forward(...args) {
      return drain(network.forwardInChunks(...args));
    },

    *trainStepInChunks(weights, x, labels, maskValues, gradOut, onTailReady) {
      const n = labels.length;
      if (x.length !== n * inputSize) throw new Error('images do not match the network input');
      for (const m of masks) {
        const length = maskValues[m.index]?.length;
        if (length !== n * m.units) throw new Error(`dropout mask ${net.dropouts[m.index].name} has ${length} entries, expected ${n * m.units}`);
      }
      const mem = loadWeights(weights, Math.min(n, chunk));
      mem.fill(0, gradStart / FLOAT, gradStart / FLOAT + gradFloats);
      let lossSum = 0;
      for (let c0 = 0; c0 < n; c0 += chunk) {
        const m = Math.min(chunk, n - c0);
        mem.set(x.subarray(c0 * inputSize, (c0 + m) * inputSize), input.act / FLOAT);
        new Uint8Array(inst.memory.buffer, labelsPtr, m).set(labels.subarray(c0, c0 + m));
        for (const mask of masks) {
          const src = maskValues[mask.index];
          const base = mask.ptr / FLOAT;
          for (let i = 0; i < m; i++) {
            mem.set(src.subarray((c0 + i) * mask.units, (c0 + i + 1) * mask.units), base + i * mask.cp);
            mem.fill(0, base + i * mask.cp + mask.units, base + (i + 1) * mask.cp);
          }
        }
        for (const op of ops) op.forward(m, true);
        lossSum = k().softmaxNll(logits.act, m, classes, logitStride, labelsPtr, logits.grad, lossSum);
        const lastChunk = c0 + m >= n;
        let tail = totalParams; // gradOut[tail…] is final
        for (let i = ops.length - 1; i >= 0; i--) {
          const op = ops[i];
          op.backward(m);
          if (!lastChunk || !op.params) continue;
          for (const p of op.params) {
            p.unpack(mem.subarray(p.gradPtr / FLOAT, p.gradPtr / FLOAT + p.size), gradOut.subarray(p.offset, p.offset + p.length));
            finished.add(p.index);
          }
          // Layers finish last-first, and canonical order is layer order: the finished ones form a tail.
          while (tail > 0 && finished.has(paramAt(tail - 1))) tail = paramOffsets[paramAt(tail - 1)];
          if (tail > 0) onTailReady?.(tail, lossSum);
        }
        if (!lastChunk) yield;
      }
      finished.clear();
      return lossSum;
    },

    *forwardInChunks(weights, x, n) {
      if (x.length !== n * inputSize) throw new Error('images do not match the network input');
      const mem = loadWeights(weights, Math.min(n, chunk));
      const out = new Float32Array(n * classes);
      const base = logits.act / FLOAT;
      for (let c0 = 0; c0 < n; c0 += chunk) {
        const m = Math.min(chunk, n - c0);
        mem.set(x.subarray(c0 * inputSize, (c0 + m) * inputSize), input.act / FLOAT);
        for (const op of ops) op.forward(m, false);
        k().logSoftmax(logits.act, m, classes, logitStride);
        for (let i = 0; i < m; i++) out.set(mem.subarray(base + i * logitStride, base + i * logitStride + classes), (c0 + i) * classes);
        if (c0 + m < n) yield;
      }
      return out;
    },
  };
  return network;
}
