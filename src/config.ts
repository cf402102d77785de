/**
 * The one typed configuration of a training run. Logged at start, stored in every checkpoint and
 * in summary.json. Defaults mirror the PyTorch MNIST example's flags.
 */
import type { EngineChoice } from './engine/backend.js';
import type { ModelName } from './models/types.js';
import type { GradDtype } from './protocol/grad-dtype.js';

export interface TrainConfig {
  /** Which network: 'net' (the example's), 'lenet' (the study's comparison), 'strong'. */
  model: ModelName;
  /** Samples per optimisation step (global batch, summed over all workers). Default 64. */
  batchSize: number;
  /**
   * --batch-size-per-worker B (weak scaling): batchSize is then B × N, N the number of workers the
   * run started with (1 for --workers 0), fixed for the run, a resumed one included.
   */
  batchSizePerWorker?: number;
  /**
   * 'linear' (the default with batchSizePerWorker): the learning rate is lr × N after a linear
   * warm-up from lr over `warmupEpochs` (Goyal et al., 2017); 'none': lr as given.
   */
  lrScaling?: LrScaling;
  /** Epochs (a fraction is fine) over which linear scaling's warm-up rises from lr to lr × N. */
  warmupEpochs?: number;
  /** What gradients and weights travel as between coordinator and workers. Default float32. */
  gradDtype?: GradDtype;
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
  /** --engine: which engine computes, here and in spawned workers; 'auto' picks the best available. */
  engine: EngineChoice;
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
  /** Seeded random affine augmentation of training images (rotation, scale, shift). Default false. */
  augment: boolean;
  /** 'constant' (the example's), or 'cosine': lr decays to 0 along a half cosine over the run. */
  lrSchedule: LrSchedule;
}

export type LrSchedule = 'constant' | 'cosine';
export type LrScaling = 'linear' | 'none';

/** The augmentation `augment` turns on: small enough that every digit stays what it is. */
export const AUGMENTATION = { maxRotateDeg: 10, maxScale: 0.1, maxShift: 2 } as const;

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
  engine: 'auto',
  deterministic: false,
  shardSize: 16,
  checkpointEvery: 0,
  augment: false,
  lrSchedule: 'constant',
  lrScaling: 'none',
  /**
   * A quarter of an epoch: Goyal et al. warm up over 5 of 90 ImageNet epochs, but the net reaches
   * most of its MNIST accuracy within the first epoch, and the first steps, from random weights,
   * are where a multiplied rate is most likely to overshoot (the paper's reason for warming up). A
   * quarter epoch covers them and leaves a one-epoch run three quarters at the full rate.
   */
  warmupEpochs: 0.25,
  gradDtype: 'float32',
} as const satisfies Partial<TrainConfig>;

/**
 * Each model's own defaults, used for every flag not given on the command line. `net` and `lenet`
 * keep the example's; `strong` trains longer, with augmentation, momentum 0.9 and a cosine schedule.
 */
export const MODEL_DEFAULTS: Record<ModelName, Partial<TrainConfig>> = {
  net: {},
  lenet: {},
  strong: { epochs: 15, batchSize: 128, lr: 0.05, momentum: 0.9, augment: true, lrSchedule: 'cosine' },
};

/** Fills in the model's defaults for the settings the user did not give (`given`: config keys). */
export function applyModelDefaults(config: TrainConfig, given: ReadonlySet<string>): TrainConfig {
  const out = { ...config } as unknown as Record<string, unknown>;
  for (const [key, value] of Object.entries(MODEL_DEFAULTS[config.model])) if (!given.has(key)) out[key] = value;
  return out as unknown as TrainConfig;
}

/** What --lr is multiplied by: N (the global batch over the per-worker batch) under linear scaling, else 1. */
export function lrScaleFactor(config: TrainConfig): number {
  return config.lrScaling === 'linear' && config.batchSizePerWorker ? config.batchSize / config.batchSizePerWorker : 1;
}

/** Steps of linear scaling's warm-up (none without scaling). */
export function warmupSteps(config: TrainConfig, stepsPerEpoch: number): number {
  return lrScaleFactor(config) > 1 ? Math.round((config.warmupEpochs ?? DEFAULTS.warmupEpochs) * stepsPerEpoch) : 0;
}

/**
 * Learning rate at a given step: the schedule (constant or cosine) from lr × k, k = lrScaleFactor;
 * during the warm-up, times a factor rising linearly from 1/k to 1, so that the rate goes from lr to
 * lr × k (Goyal et al., 2017, "gradual warm-up").
 */
export function lrAt(config: TrainConfig, step: number, totalSteps: number): number {
  const k = lrScaleFactor(config);
  const peak = config.lr * k;
  const lr = config.lrSchedule === 'constant' || totalSteps <= 0 ? peak : peak * 0.5 * (1 + Math.cos((Math.PI * Math.min(step, totalSteps)) / totalSteps));
  const warmup = totalSteps > 0 ? warmupSteps(config, totalSteps / config.epochs) : 0;
  return step < warmup ? (lr * (1 + ((k - 1) * step) / warmup)) / k : lr;
}

/** Momentum at a given step, following the optional linear ramp. */
export function momentumAt(config: TrainConfig, step: number, totalSteps: number): number {
  if (config.momentumFinal === undefined) return config.momentum;
  const ramp = config.momentumRampSteps ?? totalSteps;
  const t = ramp <= 0 ? 1 : Math.min(1, step / ramp);
  return config.momentum + (config.momentumFinal - config.momentum) * t;
}
