/**
 * The one typed configuration of a training run. Logged at start, stored in every checkpoint and
 * in summary.json. Defaults mirror the PyTorch MNIST example's flags.
 */
import type { ModelName } from './models/types.js';

export interface TrainConfig {
  /** Which network: 'net' (the example's), 'lenet' (the study's comparison), 'strong'. */
  model: ModelName;
  /** Samples per optimisation step (global batch, summed over all workers). Default 64. */
  batchSize: number;
  /** Samples per forward pass at evaluation. Default 1000. */
  testBatchSize: number;
  /** Passes over the training set. Default 10. */
  epochs: number;
  /** Learning rate. Default 0.01. */
  lr: number;
  /** SGD momentum (PyTorch semantics: v = μ·v + g; w = w − lr·v). Default 0.5. */
  momentum: number;
  /** If set, momentum rises linearly from `momentum` to this value over `momentumRampSteps`. */
  momentumFinal?: number;
  /** Steps over which momentum rises to `momentumFinal` (default: the whole run). */
  momentumRampSteps?: number;
  /** Seeds initial weights, the epoch shuffles and dropout masks. Default 1. */
  seed: number;
  /** Batches between `Train Epoch` log lines. Default 10. */
  logInterval: number;
  /** --no-cuda: never train on a GPU. Default false. */
  noCuda: boolean;
  /** Worker processes; 0 = single-node fallback in this process. */
  workers: number;
  /** Bitwise-reproducible training whatever the number of workers. Default false. */
  deterministic: boolean;
  /**
   * Deterministic mode's unit of work: a batch is cut into shards of this many samples, one
   * gradient per shard, summed in shard order. It must not depend on the number of workers.
   */
  shardSize: number;
  /** Use only the first N training / test samples. */
  trainLimit?: number;
  testLimit?: number;
  /** MNIST directory; the bundled copy when absent. */
  dataDir?: string;
  /** Where the run's files go. */
  outDir: string;
  /** Steps between checkpoints, besides the one at each epoch's end; 0 = epoch ends only. */
  checkpointEvery: number;
}

export const DEFAULTS = {
  model: 'net',
  batchSize: 64,
  testBatchSize: 1000,
  epochs: 10,
  lr: 0.01,
  momentum: 0.5,
  seed: 1,
  logInterval: 10,
  noCuda: false,
  deterministic: false,
  shardSize: 16,
  checkpointEvery: 0,
} as const satisfies Partial<TrainConfig>;

/** Momentum at a given step, following the optional linear ramp. */
export function momentumAt(config: TrainConfig, step: number, totalSteps: number): number {
  if (config.momentumFinal === undefined) return config.momentum;
  const ramp = config.momentumRampSteps ?? totalSteps;
  const t = ramp <= 0 ? 1 : Math.min(1, step / ramp);
  return config.momentum + (config.momentumFinal - config.momentum) * t;
}
