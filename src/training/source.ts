/**
 * Where a step's gradient comes from. The training loop is the same for the single-node fallback
 * and for distributed training; only this source differs.
 */
import { ReductionArena } from '../engine/simd/reduce.js';
import type { ModelDef } from '../models/types.js';
import { type GradDtype, roundTrip } from '../protocol/grad-dtype.js';
import { UserError } from '../util/errors.js';
import { type GradientOptions, type ShardData, createGradientComputer } from './gradients.js';

/** What one process computed on, as summary.json's `devices` lists it. */
export interface DeviceDescription {
  /** The worker's id (absent for the coordinator). */
  id?: string;
  backend: string;
  device: string;
  /** The GPU adapter, for a GPU engine (vendor, architecture, device, description, software). */
  adapter?: { vendor: string; architecture: string; device: string; description: string; software: boolean };
  /** What decides the engine's bits, e.g. "wasm (fused kernels)" (engineIdentity). */
  engine?: string;
  /** The build that computed: package version + digest of its code (util/build.ts). */
  build?: string;
  /** A worker admitted although its engine or build differs from the run's: what differs. */
  differs?: string[];
}

export interface BatchResult {
  /** Σ of the samples' NLL losses over the batch. */
  lossSum: number;
  count: number;
}

export interface GradientSource {
  /** How many workers take part (0 for the single-node fallback). */
  readonly workers: number;
  /** How many of them training needs to start and to go on (--min-workers; absent: `workers`). */
  readonly minWorkers?: number;
  /**
   * Writes into `gradSum` the sum over `shards`, in shard order, of each shard's gradient sum:
   * gradSum = ((0 + g₀) + g₁) + … in float32. Deterministic mode depends on exactly this order.
   */
  computeBatch(step: number, weights: Float32Array, shards: ShardData[], gradSum: Float32Array): Promise<BatchResult>;
  /** Workers lost so far. */
  workerFailures(): number;
  /** Every worker that took part, with what it computed on (absent for the local source). */
  workerDevices?(): DeviceDescription[];
  /** Figures about the exchange (bytes, times) for summary.json; absent for the local source. */
  poolStats?(): object;
  /** Ends the source; `finished` tells workers whether the run is over or will be resumed. */
  close(finished: boolean): Promise<void>;
}

/**
 * `weights` as a worker receives them under `gradDtype`: rounded, into `into` (the weights
 * themselves for float32).
 */
export function travelledWeights(weights: Float32Array, gradDtype: GradDtype, into: Float32Array): Float32Array {
  if (gradDtype === 'float32') return weights;
  into.set(weights);
  roundTrip(into, gradDtype);
  return into;
}

/** What to try when gradients are not finite. */
export function divergenceHint(gradDtype: GradDtype): string {
  return gradDtype === 'float16' ? 'try a lower --lr, or --grad-dtype bfloat16: float16 overflows past 65504' : 'try a lower --lr';
}

/**
 * The single-node fallback: every shard computed here, one after another. Under a 16-bit
 * `gradDtype` the weights and each shard's gradient are rounded as if they had travelled, so that
 * the bits equal those of distributed training.
 */
export function createLocalSource(model: ModelDef, size: number, opts: GradientOptions = {}, gradDtype: GradDtype = 'float32'): GradientSource {
  const computer = createGradientComputer(model, opts);
  // Each shard's gradient is computed into a slot of the arena, then the slots are added in shard
  // order there: the same reduction, and the same kernels, as the coordinator's (reducer.ts).
  const arena = new ReductionArena(size);
  const rounded = new Float32Array(gradDtype === 'float32' ? 0 : size);
  return {
    workers: 0,
    async computeBatch(step, weights, shards, gradSum) {
      let lossSum = 0;
      let count = 0;
      arena.reserve(shards.length);
      const used = travelledWeights(weights, gradDtype, rounded);
      for (let i = 0; i < shards.length; i++) {
        const r = await computer.compute(used, shards[i], arena.slot(i));
        roundTrip(arena.slot(i), gradDtype);
        lossSum += r.lossSum;
        count += r.count;
      }
      arena.sumSlots(shards.length);
      gradSum.set(arena.sum);
      // As in distributed training, a non-finite gradient is never applied.
      if (!Number.isFinite(lossSum) || !arena.allFinite(arena.sum, 0, size)) {
        throw new UserError(`training diverged at step ${step}: non-finite gradients (${divergenceHint(gradDtype)})`);
      }
      return { lossSum, count };
    },
    workerFailures: () => 0,
    async close() {},
  };
}
