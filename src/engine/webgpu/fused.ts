/**
 * The fused GPU step: a model's whole training step (forward, log-softmax + NLL, backward) as a few
 * dozen WGSL compute shaders (kernels.ts) recorded into one command buffer, on buffers that stay on
 * the GPU. Per step the host writes the weights, images, labels and dropout masks once, submits
 * once and reads the gradient (and the per-sample losses) back once.
 *
 * tfjs's WebGPU backend dispatches one program per op, each from JavaScript, with its own uniforms and
 * bookkeeping: about 115 for a step of `net` (bench/webgpu-step). Where a shard takes about a
 * millisecond of GPU arithmetic, that dispatch work, not the arithmetic, sets the pace. This engine
 * serves the layer kinds of engine/layers.ts, the same list the models are written in;
 * `createGpuNetwork` returns undefined for a network it cannot run, and tfjs's ops run it instead.
 */
import type { NetworkDescription } from '../simd/step.js';
import * as K from './kernels.js';

export interface GpuNetwork {
  /** Σ over the shard of ∂NLL/∂w into `gradOut` (canonical order); resolves to Σ NLL (summed in sample order). */
  trainStep(weights: Float32Array, x: Float32Array, labels: Uint8Array, masks: readonly Float32Array[], gradOut: Float32Array): Promise<number>;
  /** Log-probabilities [n × classes] of normalised images x (dropout inactive). */
  forward(weights: Float32Array, x: Float32Array, n: number): Promise<Float32Array>;
  /** GPU programs a training step of n samples dispatches. */
  programsPerStep(n: number): number;
}

/** Samples taken through the network per pass: bounds the activation buffers; larger shards run in chunks. */
export const GPU_CHUNK = 512;

/** A kernel with its generic binding names mapped to the network's buffers. */
interface Dispatch {
  kernel: K.Kernel;
  buffers: Record<string, string>;
}

/** One layer's kernels for a chunk of m samples starting at sample c0 of the shard. */
interface LayerOp {
  forward(m: number, c0: number, training: boolean): Dispatch[];
  backward(m: number, c0: number): Dispatch[];
}

interface Activation {
  /** The buffer holding it: 'x' for the input (shard-sized, read at the chunk's offset), else chunk-sized. */
  act: string;
  /** Its gradient's buffer (none for the input). */
  grad?: string;
  h: number;
  w: number;
  c: number;
}

const FLOAT = 4;

/**
 * The network on `device`, or undefined where it uses something these kernels do not serve.
 * Buffers and pipelines are made on first use and kept for the process.
 */
export function createGpuNetwork(device: GPUDevice, net: NetworkDescription, inputShape: readonly [number, number, number]): GpuNetwork | undefined {
  const paramIndex = new Map(net.params.map((p, i) => [p.name, i]));
  const offsets: number[] = [];
  let total = 0;
  for (const p of net.params) {
    offsets.push(total);
    total += p.shape.reduce((a, b) => a * b, 1);
  }
  const dropoutIndex = new Map(net.dropouts.map((d, i) => [d.name, i]));
  const inputSize = inputShape[0] * inputShape[1] * inputShape[2];

  /** Floats per sample of each chunk-sized buffer (activations, gradients, pool winners). */
  const perSample = new Map<string, number>();
  let partialPerSample = 0;
  const ops: LayerOp[] = [];
  let cur: Activation = { act: 'x', h: inputShape[0], w: inputShape[1], c: inputShape[2] };
  let flat = false;
  let classes = 0;
  let logits: Activation | undefined;
  let fresh = 0;
  const newActivation = (h: number, w: number, c: number): Activation => {
    const k = fresh++;
    const a = { act: `a${k}`, grad: `g${k}`, h, w, c };
    perSample.set(a.act, h * w * c);
    perSample.set(a.grad, h * w * c);
    return a;
  };
  const xOffset = (a: Activation, c0: number): number => (a.act === 'x' ? c0 : 0);
  const param = (name: string): { offset: number; shape: readonly number[] } | undefined => {
    const i = paramIndex.get(name);
    return i === undefined ? undefined : { offset: offsets[i], shape: net.params[i].shape };
  };

  for (const [li, l] of net.layers.entries()) {
    const from = cur;
    const unsupported = ((): boolean => {
      switch (l.kind) {
        case 'conv': {
          const w = param(`${l.name}.weight`);
          const b = param(`${l.name}.bias`);
          if (flat || !w || !b || w.shape.length !== 4 || w.shape[0] !== w.shape[1] || w.shape[2] !== from.c) return true;
          const k = w.shape[0];
          const co = w.shape[3];
          const pad = l.pad === 'same' ? (k - 1) / 2 : 0;
          if (!Number.isInteger(pad)) return true;
          const to = newActivation(from.h + 2 * pad - k + 1, from.w + 2 * pad - k + 1, co);
          const shape = (m: number): K.ConvShape => ({ n: m, h: from.h, w: from.w, ci: from.c, k, pad, co, oh: to.h, ow: to.w });
          const len = k * k * from.c * co;
          partialPerSample = Math.max(partialPerSample, len, co);
          ops.push({
            forward: (m, c0) => [{ kernel: K.convForward(`${l.name} forward`, shape(m), w.offset, b.offset, xOffset(from, c0)), buffers: { x: from.act, y: to.act } }],
            backward: (m, c0) => {
              const dy = to.grad as string;
              const list: Dispatch[] = [
                { kernel: K.convFilterPartial(`${l.name} weight gradient`, shape(m), xOffset(from, c0)), buffers: { x: from.act, dy } },
                { kernel: K.sumOverSamples(`${l.name} weight gradient sum`, m, len, w.offset, c0 > 0), buffers: {} },
                { kernel: K.biasPartial(`${l.name} bias gradient`, m, to.h * to.w, co), buffers: { dy } },
                { kernel: K.sumOverSamples(`${l.name} bias gradient sum`, m, co, b.offset, c0 > 0), buffers: {} },
              ];
              if (from.grad) list.push({ kernel: K.convInputGrad(`${l.name} input gradient`, shape(m), w.offset), buffers: { dy, dx: from.grad } });
              return list;
            },
          });
          cur = to;
          return false;
        }
        case 'maxPool2': {
          if (flat || !from.grad) return true;
          const to = newActivation(from.h >> 1, from.w >> 1, from.c);
          const arg = `arg${fresh}`;
          perSample.set(arg, to.h * to.w * to.c);
          ops.push({
            forward: (m) => [{ kernel: K.maxPoolForward('max-pool forward', m, from.h, from.w, from.c), buffers: { x: from.act, y: to.act, arg } }],
            backward: (m) => [{ kernel: K.maxPoolBackward('max-pool backward', m, from.h, from.w, from.c), buffers: { dy: to.grad as string, arg, dx: from.grad as string } }],
          });
          cur = to;
          return false;
        }
        case 'relu': {
          if (!from.grad) return true;
          const to = newActivation(from.h, from.w, from.c);
          const count = (m: number): number => m * from.h * from.w * from.c;
          ops.push({
            forward: (m) => [{ kernel: K.reluForward('relu forward', count(m)), buffers: { x: from.act, y: to.act } }],
            backward: (m) => [{ kernel: K.reluBackward('relu backward', count(m)), buffers: { x: from.act, dy: to.grad as string, dx: from.grad as string } }],
          });
          cur = to;
          return false;
        }
        case 'dropout2d':
        case 'dropout': {
          const index = dropoutIndex.get(l.name);
          if (index === undefined || !from.grad || net.dropouts[index].units !== from.c || (l.kind === 'dropout') !== flat) return true;
          const mask = `mask${index}`;
          const pixels = from.h * from.w;
          // In place, on the activation in the forward pass and on its gradient in the backward pass.
          ops.push({
            forward: (m, c0, training) => (training ? [{ kernel: K.scaleByMask(`${l.name} forward`, m, pixels, from.c, c0), buffers: { mask, v: from.act } }] : []),
            backward: (m, c0) => [{ kernel: K.scaleByMask(`${l.name} backward`, m, pixels, from.c, c0), buffers: { mask, v: from.grad as string } }],
          });
          return false;
        }
        case 'flatten':
          // NHWC is already flat in memory.
          cur = { ...from, h: 1, w: 1, c: from.h * from.w * from.c };
          flat = true;
          return false;
        case 'dense': {
          const w = param(`${l.name}.weight`);
          const b = param(`${l.name}.bias`);
          if (!flat || !w || !b || w.shape.length !== 2 || w.shape[0] !== from.c) return true;
          const inUnits = from.c;
          const outUnits = w.shape[1];
          const to = newActivation(1, 1, outUnits);
          ops.push({
            forward: (m, c0) => [{ kernel: K.denseForward(`${l.name} forward`, m, inUnits, outUnits, w.offset, b.offset, xOffset(from, c0)), buffers: { x: from.act, y: to.act } }],
            backward: (m, c0) => {
              const dy = to.grad as string;
              const list: Dispatch[] = [
                { kernel: K.denseWeightGrad(`${l.name} weight gradient`, m, inUnits, outUnits, w.offset, xOffset(from, c0), c0 > 0), buffers: { x: from.act, dy } },
                { kernel: K.denseBiasGrad(`${l.name} bias gradient`, m, outUnits, b.offset, c0 > 0), buffers: { dy } },
              ];
              if (from.grad) list.push({ kernel: K.denseInputGrad(`${l.name} input gradient`, m, inUnits, outUnits, w.offset), buffers: { dy, dx: from.grad } });
              return list;
            },
          });
          cur = to;
          return false;
        }
        case 'logSoftmax':
          if (!flat || li !== net.layers.length - 1 || !from.grad) return true;
          classes = from.c;
          logits = from;
          return false;
        case 'tap':
          return false;
      }
    })();
    if (unsupported) return undefined;
  }
  if (!logits || classes === 0) return undefined;
  const out = logits;

  // Buffers, sized on demand: shard-sized ones for `shardCapacity` samples, chunk-sized ones for `chunkCapacity`.
  const STORAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
  const buffers = new Map<string, GPUBuffer>();
  let shardCapacity = 0;
  let chunkCapacity = 0;
  const make = (name: string, floats: number, usage = STORAGE): void => {
    buffers.get(name)?.destroy();
    // A zero-sized binding is invalid: every buffer has room for at least one element.
    buffers.set(name, device.createBuffer({ label: name, size: Math.max(4, floats * FLOAT), usage }));
  };
  make('params', total);
  make('grads', total);
  const plans = new Map<string, { pass: Array<{ pipeline: GPUComputePipeline; bindGroup: GPUBindGroup; groups: [number, number] }> }>();
  const pipelines = new Map<string, Promise<GPUComputePipeline>>();

  const ensureCapacity = (n: number): void => {
    const chunk = Math.min(n, GPU_CHUNK);
    if (n > shardCapacity) {
      shardCapacity = n;
      make('x', n * inputSize);
      make('labels', n);
      make('loss', n);
      net.dropouts.forEach((d, i) => make(`mask${i}`, n * d.units));
      make('readback', total + n, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST);
      make('logp', n * classes);
      plans.clear();
    }
    if (chunk > chunkCapacity) {
      chunkCapacity = chunk;
      for (const [name, floats] of perSample) make(name, floats * chunk);
      make('partial', partialPerSample * chunk);
      plans.clear();
    }
  };

  const pipelineFor = (kernel: K.Kernel): Promise<GPUComputePipeline> => {
    let p = pipelines.get(kernel.code);
    if (!p) {
      const module = device.createShaderModule({ label: kernel.label, code: kernel.code });
      p = device.createComputePipelineAsync({ label: kernel.label, layout: 'auto', compute: { module, entryPoint: 'main' } });
      pipelines.set(kernel.code, p);
    }
    return p;
  };

  const chunksOf = (n: number): Array<[number, number]> => {
    const chunks: Array<[number, number]> = [];
    for (let c0 = 0; c0 < n; c0 += GPU_CHUNK) chunks.push([c0, Math.min(GPU_CHUNK, n - c0)]);
    return chunks;
  };

  /** Every dispatch of a training step (training) or of an evaluation pass, for n samples. */
  const dispatchesFor = (n: number, training: boolean): Dispatch[] => {
    const list: Dispatch[] = [];
    for (const [c0, m] of chunksOf(n)) {
      for (const op of ops) list.push(...op.forward(m, c0, training));
      if (training) {
        list.push({ kernel: K.softmaxNll('log-softmax + NLL', m, classes, c0), buffers: { z: out.act, dz: out.grad as string } });
        for (let i = ops.length - 1; i >= 0; i--) list.push(...ops[i].backward(m, c0));
      } else {
        list.push({ kernel: K.logSoftmax('log-softmax', m, classes), buffers: { z: out.act, out: 'logp' } });
      }
    }
    return list;
  };

  const planFor = async (n: number, training: boolean) => {
    const key = `${n}:${training}`;
    let plan = plans.get(key);
    if (plan) return plan;
    const list = dispatchesFor(n, training);
    const pass = await Promise.all(
      list.map(async ({ kernel, buffers: names }) => {
        const pipeline = await pipelineFor(kernel);
        const entries = kernel.bindings.map((generic, binding) => {
          const buffer = buffers.get(names[generic] ?? generic);
          if (!buffer) throw new Error(`${kernel.label}: no buffer for ${generic}`);
          return { binding, resource: { buffer } };
        });
        const bindGroup = device.createBindGroup({ label: kernel.label, layout: pipeline.getBindGroupLayout(0), entries });
        const groups = Math.ceil(kernel.threads / K.WORKGROUP);
        return { pipeline, bindGroup, groups: [Math.min(groups, K.MAX_GROUPS_X), Math.ceil(groups / K.MAX_GROUPS_X)] as [number, number] };
      }),
    );
    plan = { pass };
    plans.set(key, plan);
    return plan;
  };

  const run = (plan: { pass: Array<{ pipeline: GPUComputePipeline; bindGroup: GPUBindGroup; groups: [number, number] }> }, copies: Array<[string, number, number]>): void => {
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    for (const d of plan.pass) {
      pass.setPipeline(d.pipeline);
      pass.setBindGroup(0, d.bindGroup);
      pass.dispatchWorkgroups(d.groups[0], d.groups[1]);
    }
    pass.end();
    for (const [from, floats, at] of copies) encoder.copyBufferToBuffer(buffers.get(from) as GPUBuffer, 0, buffers.get('readback') as GPUBuffer, at * FLOAT, floats * FLOAT);
    device.queue.submit([encoder.finish()]);
  };

  const write = (name: string, data: Float32Array | Uint32Array): void => {
    device.queue.writeBuffer(buffers.get(name) as GPUBuffer, 0, data.buffer, data.byteOffset, data.byteLength);
  };

  let labelScratch = new Uint32Array(0);
  // One step at a time: the read-back buffer is shared.
  let queue: Promise<unknown> = Promise.resolve();
  const exclusive = <T>(f: () => Promise<T>): Promise<T> => {
    const next = queue.then(f, f);
    queue = next.catch(() => {});
    return next;
  };

  const readBack = async (floats: number): Promise<Float32Array> => {
    const readback = buffers.get('readback') as GPUBuffer;
    await readback.mapAsync(GPUMapMode.READ, 0, floats * FLOAT);
    try {
      return new Float32Array(readback.getMappedRange(0, floats * FLOAT).slice(0));
    } finally {
      readback.unmap();
    }
  };

  return {
    programsPerStep: (n) => dispatchesFor(n, true).length,

    trainStep(weights, x, labels, masks, gradOut) {
      return exclusive(async () => {
        const n = labels.length;
        if (weights.length !== total || gradOut.length < total) throw new Error(`expected ${total} weights and gradients`);
        if (x.length !== n * inputSize) throw new Error('images do not match the network input');
        net.dropouts.forEach((d, i) => {
          if (masks[i]?.length !== n * d.units) throw new Error(`dropout mask ${d.name} has ${masks[i]?.length} entries, expected ${n * d.units}`);
        });
        ensureCapacity(n);
        const plan = await planFor(n, true);
        write('params', weights);
        write('x', x);
        if (labelScratch.length < n) labelScratch = new Uint32Array(n);
        const labels32 = labelScratch.subarray(0, n);
        for (let i = 0; i < n; i++) labels32[i] = labels[i];
        write('labels', labels32);
        net.dropouts.forEach((_, i) => write(`mask${i}`, masks[i]));
        run(plan, [
          ['grads', total, 0],
          ['loss', n, total],
        ]);
        const values = await readBack(total + n);
        gradOut.set(values.subarray(0, total));
        let lossSum = 0;
        for (let i = 0; i < n; i++) lossSum = Math.fround(lossSum + values[total + i]);
        return lossSum;
      });
    },

    forward(weights, x, n) {
      return exclusive(async () => {
        if (x.length !== n * inputSize) throw new Error('images do not match the network input');
        ensureCapacity(n);
        write('params', weights);
        // Each chunk's log-probabilities are copied out before the next chunk overwrites them.
        const chunks = chunksOf(n);
        if (chunks.length === 1) {
          const plan = await planFor(n, false);
          write('x', x);
          run(plan, [['logp', n * classes, 0]]);
          return readBack(n * classes);
        }
        const result = new Float32Array(n * classes);
        for (const [c0, m] of chunks) {
          const sub = await planFor(m, false);
          write('x', x.subarray(c0 * inputSize, (c0 + m) * inputSize));
          run(sub, [['logp', m * classes, 0]]);
          result.set(await readBack(m * classes), c0 * classes);
        }
        return result;
      });
    },
  };
}
