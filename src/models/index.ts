/** Model factories and what every model shares: the flat parameter layout and its initialisation. */
import { createHash } from 'node:crypto';
import { SeededRng } from '../util/rng.js';
import { createLeNet } from './lenet.js';
import { createNet } from './net.js';
import { createStrong } from './strong.js';
import type { ModelDef, ModelName, ParamSpec } from './types.js';
import { MODEL_NAMES } from './types.js';

export * from './types.js';

/** Stream id of the generator that draws initial weights (see util/rng). */
const INIT_STREAM = 0x1a17;

export function createModel(name: ModelName): ModelDef {
  switch (name) {
    case 'net':
      return createNet();
    case 'lenet':
      return createLeNet();
    case 'strong':
      return createStrong();
  }
}


export function paramSize(spec: ParamSpec): number {
  return spec.shape.reduce((a, b) => a * b, 1);
}

/** Where each parameter lives in the flat Float32Array that holds them all, in canonical order. */
export interface ParamLayout {
  specs: ParamSpec[];
  offsets: number[];
  total: number;
}

export function paramLayout(model: ModelDef): ParamLayout {
  const offsets: number[] = [];
  let total = 0;
  for (const spec of model.params) {
    offsets.push(total);
    total += paramSize(spec);
  }
  return { specs: model.params, offsets, total };
}

/**
 * PyTorch's default initialisation: Conv2d and Linear weights are kaiming-uniform with a = √5,
 * i.e. U(−b, b) with b = gain·√(3/fanIn) = √(1/3)·√(3/fanIn) = 1/√fanIn; biases U(−1/√fanIn, 1/√fanIn).
 * Drawn in canonical order from the seeded generator.
 */
export function initialWeights(model: ModelDef, seed: number): Float32Array {
  const layout = paramLayout(model);
  const weights = new Float32Array(layout.total);
  const rng = SeededRng.create(seed, INIT_STREAM);
  layout.specs.forEach((spec, i) => {
    const bound = 1 / Math.sqrt(spec.fanIn);
    const view = weights.subarray(layout.offsets[i], layout.offsets[i] + paramSize(spec));
    for (let j = 0; j < view.length; j++) view[j] = rng.uniformRange(-bound, bound);
  });
  return weights;
}

/** A PyTorch-like printed summary of the model. */
export function describeModel(model: ModelDef): string {
  const layout = paramLayout(model);
  const lines = [`${model.name}(`];
  layout.specs.forEach((spec) => lines.push(`  ${spec.name.padEnd(14)} [${spec.shape.join(', ')}]`.padEnd(36) + `${paramSize(spec)}`));
  for (const d of model.dropouts) lines.push(`  ${d.name.padEnd(14)} Dropout(p=${d.p}) on ${d.units} units`);
  lines.push(`)  ${layout.total.toLocaleString('en-US')} trainable parameters`);
  return lines.join('\n');
}

/**
 * What a model computes, as a digest: its name, its parameters' names and shapes, its dropout
 * layers (rate and units) and its layers in order. Two processes whose digests for a model differ
 * compute different gradients for it (workers say theirs in the hello; the coordinator compares).
 */
export function modelDigest(model: ModelDef): string {
  const what = {
    name: model.name,
    params: model.params.map((p) => [p.name, p.shape]),
    dropouts: model.dropouts.map((d) => [d.name, d.p, d.units]),
    layers: model.layers,
  };
  return createHash('sha256').update(JSON.stringify(what)).digest('hex').slice(0, 16);
}

/** Every model this build knows, by name, with its digest (a worker's hello carries them). */
export function modelDigests(): Record<string, string> {
  return Object.fromEntries(MODEL_NAMES.map((name) => [name, modelDigest(createModel(name))]));
}
