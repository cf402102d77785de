/**
 * The training loop: epochs of shuffled batches, a gradient per batch from the source, momentum
 * SGD, the example's log lines, an evaluation after every epoch, checkpoints, and at the end the
 * summary, the layers-format model, plots and the report. Only the coordinator runs it.
 */
import { createHash } from 'node:crypto';
import { appendFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULTS, type TrainConfig, lrAt, lrScaleFactor, momentumAt, warmupSteps } from '../config.js';
import { IMAGE_PIXELS, type MnistData, gatherSamples } from '../data/mnist.js';
import { paramLayout } from '../models/index.js';
import type { ModelDef } from '../models/types.js';
import type { Logger } from '../util/logger.js';
import type { Terminal } from '../util/terminal.js';
import { type TrainingState, saveCheckpoint } from './checkpoint.js';
import { type Evaluation, createEvaluator } from './evaluate.js';
import { exportLayersModel } from './export.js';
import type { ShardData } from './gradients.js';
import { MomentumSgd } from './sgd.js';
import { batchesPerEpoch, epochOrder, evenShards, fixedSizeShards, sampleKey } from './schedule.js';
import type { DeviceDescription, GradientSource } from './source.js';

export const METRICS_FILE = 'metrics.jsonl';

const ABANDONED = Symbol('abandoned');

/** `work`'s result, or ABANDONED as soon as `signal` aborts (work's own outcome is then ignored). */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T | typeof ABANDONED> {
  if (!signal) return work;
  if (signal.aborted) {
    work.catch(() => {});
    return Promise.resolve(ABANDONED);
  }
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      work.catch(() => {});
      resolve(ABANDONED);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
export const SUMMARY_FILE = 'summary.json';

export interface RunContext {
  config: TrainConfig;
  model: ModelDef;
  data: MnistData;
  source: GradientSource;
  logger: Logger;
  terminal: Terminal;
  /** The engine that computes, as summary.json names it. */
  backend: string;
  /** What this process computes on (summary.json's devices.coordinator). */
  device?: DeviceDescription;
  /** Where to start: a fresh state or one read from a checkpoint. */
  state: TrainingState;
  /** Aborted on SIGINT/SIGTERM: the loop checkpoints and returns after the current step. */
  signal?: AbortSignal;
  /** Called after each artefact-producing phase; the report layer plugs in here. */
  onFinished?: (outDir: string, summary: RunSummary, evaluation: Evaluation) => Promise<void>;
  /** Told of every applied step and every evaluation (the coordinator's Prometheus metrics). */
  observer?: TrainingObserver;
}

/** One applied step, as the loop saw it. */
export interface StepRecord {
  epoch: number;
  /** Steps applied in the run so far, this one included. */
  step: number;
  /** Samples in this step's batch. */
  samples: number;
  /** The batch's mean loss. */
  loss: number;
  /** The learning rate and momentum this step was applied with. */
  lr: number;
  momentum: number;
  /** The step's wall time: its gradient from the source plus the update, s. */
  seconds: number;
}

export interface EvaluationRecord {
  epoch: number;
  step: number;
  loss: number;
  /** 0..1 */
  accuracy: number;
}

/** Watches the loop; it must not change what the loop computes (deterministic mode relies on it). */
export interface TrainingObserver {
  stepApplied(record: StepRecord): void;
  evaluated(record: EvaluationRecord): void;
}

export interface RunSummary {
  test_accuracy: number;
  test_loss: number;
  test_correct: number;
  test_count: number;
  epochs: number;
  steps: number;
  workers: number;
  /** Workers the run needed to start and to go on (--min-workers; 0 for the single-node fallback). */
  min_workers: number;
  model: string;
  backend: string;
  /** What the coordinator and every worker computed on. */
  devices: { coordinator: DeviceDescription | null; workers: DeviceDescription[] };
  deterministic: boolean;
  train_samples_per_s: number;
  train_seconds: number;
  /** This process's peak resident memory, MB. */
  peak_rss_mb: number;
  samples_seen: number;
  weights_sha256: string;
  worker_failures: number;
  momentum: { start: number; final: number | null; ramp_steps: number | null };
  /** The batch and the learning rate: weak scaling's per-worker batch and linear scaling's warm-up. */
  batch: BatchSummary;
  /** What gradients and weights travelled as (--grad-dtype). */
  grad_dtype: string;
  interrupted: boolean;
  /** The exchange with workers: bytes and times per step (distributed runs only). */
  distributed?: object;
  config: TrainConfig;
  finished_at: string;
}

export interface BatchSummary {
  /** Samples per step, over all workers. */
  global: number;
  /** --batch-size-per-worker (weak scaling), or null. */
  per_worker: number | null;
  lr_scaling: string;
  /** --lr, and what it is multiplied by after the warm-up (1 without scaling). */
  lr: number;
  lr_factor: number;
  warmup_epochs: number | null;
  warmup_steps: number;
}

/** summary.json's `batch`. */
export function batchSummary(config: TrainConfig, stepsPerEpoch: number): BatchSummary {
  const factor = lrScaleFactor(config);
  return {
    global: config.batchSize,
    per_worker: config.batchSizePerWorker ?? null,
    lr_scaling: config.lrScaling ?? DEFAULTS.lrScaling,
    lr: config.lr,
    lr_factor: factor,
    warmup_epochs: factor > 1 ? (config.warmupEpochs ?? DEFAULTS.warmupEpochs) : null,
    warmup_steps: warmupSteps(config, stepsPerEpoch),
  };
}

/** Hex SHA-256 of every parameter as little-endian float32, in canonical order. */
export function weightsSha256(weights: Float32Array): string {
  // x86-64 and arm64 are little-endian; say so rather than assume silently.
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) throw new Error('big-endian hosts are not supported');
  return createHash('sha256').update(new Uint8Array(weights.buffer, weights.byteOffset, weights.byteLength)).digest('hex');
}

export function freshState(config: TrainConfig, weights: Float32Array): TrainingState {
  return {
    config,
    epoch: 1,
    batchInEpoch: 0,
    step: 0,
    weights,
    velocity: new Float32Array(weights.length),
    trainSeconds: 0,
    samplesSeen: 0,
    workerFailures: 0,
  };
}

/** On resume: drop metric records written after the checkpoint, so none appears twice. */
export function truncateMetrics(outDir: string, step: number): void {
  const path = join(outDir, METRICS_FILE);
  if (!existsSync(path)) return;
  const kept = readFileSync(path, 'utf8')
    .split('\n')
    .filter((line) => {
      if (!line.trim()) return false;
      try {
        return (JSON.parse(line) as { step: number }).step <= step;
      } catch {
        return false; // a torn last line from a crash
      }
    });
  writeFileSync(path, kept.map((l) => `${l}\n`).join(''));
}

/**
 * Cuts each batch into shards that are views of buffers kept for the whole run ([start, end) ranges
 * of the batch): no step allocates sample buffers. A shard's indices, labels and keys are filled at
 * once; its pixels only when something reads them (the single-node source, a worker sent pixels, a
 * recomputation): workers that hold the training set are sent indices, and a step of many of them
 * gathers no pixels at all. The shards of a step stay valid until the next call, which is after the
 * step has been applied.
 */
function createBatchSharder(ctx: RunContext): (epoch: number, indices: Uint32Array) => ShardData[] {
  const { config, source } = ctx;
  const train = ctx.data.train;
  const pixels = new Uint8Array(config.batchSize * IMAGE_PIXELS);
  const labels = new Uint8Array(config.batchSize);
  const keys = new Uint32Array(config.batchSize);
  const batchIndices = new Uint32Array(config.batchSize);
  // Per batch: which shards' pixels are gathered already.
  let batch = 0;
  const shardsByLength = new Map<number, ShardData[]>();
  const shardOf = (start: number, end: number): ShardData => {
    const shardPixels = pixels.subarray(start * IMAGE_PIXELS, end * IMAGE_PIXELS);
    const shardIndices = batchIndices.subarray(start, end);
    let gatheredFor = -1;
    return {
      get pixels(): Uint8Array {
        if (gatheredFor !== batch) {
          gatherSamples(train, shardIndices, { pixels: shardPixels, labels: labels.subarray(start, end) });
          gatheredFor = batch;
        }
        return shardPixels;
      },
      labels: labels.subarray(start, end),
      keys: keys.subarray(start, end),
      indices: shardIndices,
    };
  };
  return (epoch, indices) => {
    const n = indices.length;
    batch++;
    batchIndices.set(indices);
    for (let i = 0; i < n; i++) {
      labels[i] = train.labels[indices[i]];
      keys[i] = sampleKey(config.seed, epoch, indices[i]);
    }
    let shards = shardsByLength.get(n);
    if (!shards) {
      const ranges = config.deterministic ? fixedSizeShards(n, config.shardSize) : evenShards(n, Math.max(1, source.workers));
      shards = ranges.map(([start, end]) => shardOf(start, end));
      shardsByLength.set(n, shards);
    }
    return shards;
  };
}

export async function runTraining(ctx: RunContext): Promise<RunSummary> {
  const { config, model, data, source, logger, terminal } = ctx;
  const state = ctx.state;
  const layout = paramLayout(model);
  const optimizer = new MomentumSgd(layout.total, state.velocity);
  const gradSum = new Float32Array(layout.total);
  const evaluator = createEvaluator(model);
  const shardsOf = createBatchSharder(ctx);
  const trainCount = data.train.count;
  const perEpoch = batchesPerEpoch(trainCount, config.batchSize);
  const totalSteps = perEpoch * config.epochs;
  const metricsPath = join(config.outDir, METRICS_FILE);
  const writeMetric = (record: object): void => appendFileSync(metricsPath, `${JSON.stringify(record)}\n`);
  const checkpoint = (): void => {
    state.workerFailures = source.workerFailures();
    saveCheckpoint(config.outDir, state);
    logger.debug({ step: state.step, epoch: state.epoch }, 'checkpoint written');
  };

  let evaluation: Evaluation | undefined;
  let interrupted = false;
  const batching = batchSummary(config, perEpoch);
  if (batching.per_worker !== null) {
    logger.info(
      { batch: batching },
      `weak scaling: global batch ${batching.global} = ${batching.per_worker} per worker × ${batching.global / batching.per_worker}; ` +
        (batching.lr_factor > 1
          ? `learning rate ${config.lr} × ${batching.lr_factor} = ${config.lr * batching.lr_factor}, reached by a linear warm-up over ${batching.warmup_steps} steps (${batching.warmup_epochs} epoch)`
          : `learning rate ${config.lr} (--lr-scaling ${batching.lr_scaling})`),
    );
  }

  outer: while (state.epoch <= config.epochs) {
    const epoch = state.epoch;
    const order = epochOrder(config.seed, epoch, trainCount);
    const epochStart = performance.now();
    let epochSamples = 0;
    for (let b = state.batchInEpoch; b < perEpoch; b++) {
      // Let signal handlers and timers run: the single-node source never waits on anything. A
      // distributed step waits on its workers' messages, so the event loop turns during every step
      // anyway; a pause here would only delay the next assignment (~0.04 ms a step).
      if (source.workers === 0) await new Promise<void>((resolve) => setImmediate(resolve));
      if (ctx.signal?.aborted) {
        interrupted = true;
        break outer;
      }
      const indices = order.subarray(b * config.batchSize, Math.min(trainCount, (b + 1) * config.batchSize));
      const shards = shardsOf(epoch, indices);
      const started = performance.now();
      let batch: Awaited<ReturnType<GradientSource['computeBatch']>>;
      try {
        // SIGTERM does not wait for the step: its workers may be gone (a pod's grace period is short).
        // The step is abandoned unapplied, so the checkpoint below holds the state before it, and
        // --resume computes it again: deterministic bits are unchanged.
        const outcome = await untilAborted(source.computeBatch(state.step, state.weights, shards, gradSum), ctx.signal);
        if (outcome === ABANDONED) {
          interrupted = true;
          break outer;
        }
        batch = outcome;
      } catch (e) {
        // The step was not applied: the state is consistent, so keep it for --resume.
        checkpoint();
        logger.debug(`checkpoint written at step ${state.step} before stopping`);
        throw e;
      }
      const { lossSum, count } = batch;
      // The update uses the mean gradient over the global batch, as single-node training would.
      const lr = lrAt(config, state.step, totalSteps);
      const momentum = momentumAt(config, state.step, totalSteps);
      optimizer.step(state.weights, gradSum, lr, momentum, 1 / count);
      const stepSeconds = (performance.now() - started) / 1000;
      state.trainSeconds += stepSeconds;
      state.step++;
      state.samplesSeen += count;
      state.batchInEpoch = b + 1;
      epochSamples += count;

      const loss = lossSum / count;
      ctx.observer?.stepApplied({ epoch, step: state.step, samples: count, loss, lr, momentum, seconds: stepSeconds });
      if (!Number.isFinite(loss)) logger.warn({ step: state.step, loss }, `loss is ${loss} at step ${state.step}`);
      if (b % config.logInterval === 0) {
        const seen = b * config.batchSize;
        logger.info(
          { type: 'train', epoch, batch: b, step: state.step, loss, lr },
          `Train Epoch: ${epoch} [${seen}/${trainCount} (${((100 * b) / perEpoch).toFixed(0)}%)]\tLoss: ${loss.toFixed(6)}`,
        );
        writeMetric({ type: 'train', epoch, batch: b, step: state.step, samples: state.samplesSeen, loss, lr, elapsed_s: state.trainSeconds });
      }
      terminal.progress(`epoch ${epoch}/${config.epochs}`, b + 1, perEpoch, epochSamples / ((performance.now() - epochStart) / 1000));
      if (config.checkpointEvery > 0 && state.step % config.checkpointEvery === 0) checkpoint();
    }
    terminal.endProgress();

    evaluation = await evaluator(state.weights, data.test, config.testBatchSize);
    logger.info(
      { type: 'test', epoch, step: state.step, test_loss: evaluation.loss, test_accuracy: evaluation.accuracy },
      `\nTest set: Average loss: ${evaluation.loss.toFixed(4)}, Accuracy: ${evaluation.correct}/${evaluation.count} (${(100 * evaluation.accuracy).toFixed(0)}%)\n`,
    );
    ctx.observer?.evaluated({ epoch, step: state.step, loss: evaluation.loss, accuracy: evaluation.accuracy });
    writeMetric({
      type: 'test',
      epoch,
      step: state.step,
      samples: state.samplesSeen,
      test_loss: evaluation.loss,
      test_accuracy: evaluation.accuracy,
      elapsed_s: state.trainSeconds,
    });
    state.epoch++;
    state.batchInEpoch = 0;
    checkpoint();
  }

  if (interrupted) {
    checkpoint();
    logger.warn({ step: state.step }, `interrupted at step ${state.step}; checkpoint written, continue with --resume --out ${config.outDir}`);
  }
  // An interrupted run writes no summary: it stops without evaluating.
  evaluation ??= interrupted ? { loss: NaN, correct: 0, count: 0, accuracy: NaN, predictions: new Uint8Array(0) } : await evaluator(state.weights, data.test, config.testBatchSize);

  const summary: RunSummary = {
    test_accuracy: evaluation.accuracy,
    test_loss: evaluation.loss,
    test_correct: evaluation.correct,
    test_count: evaluation.count,
    epochs: Math.min(config.epochs, state.epoch - 1),
    steps: state.step,
    workers: source.workers,
    min_workers: source.minWorkers ?? source.workers,
    model: model.name,
    backend: ctx.backend,
    devices: { coordinator: ctx.device ?? null, workers: source.workerDevices?.() ?? [] },
    deterministic: config.deterministic,
    train_samples_per_s: state.trainSeconds > 0 ? state.samplesSeen / state.trainSeconds : 0,
    train_seconds: state.trainSeconds,
    peak_rss_mb: (process.resourceUsage().maxRSS * 1024) / 2 ** 20,
    samples_seen: state.samplesSeen,
    weights_sha256: weightsSha256(state.weights),
    worker_failures: source.workerFailures(),
    momentum: { start: config.momentum, final: config.momentumFinal ?? null, ramp_steps: config.momentumFinal === undefined ? null : (config.momentumRampSteps ?? totalSteps) },
    batch: batching,
    grad_dtype: config.gradDtype ?? DEFAULTS.gradDtype,
    interrupted,
    ...(source.poolStats ? { distributed: source.poolStats() } : {}),
    config,
    finished_at: new Date().toISOString(),
  };
  if (!interrupted) {
    writeFileSync(join(config.outDir, SUMMARY_FILE), `${JSON.stringify(summary, null, 2)}\n`);
    await exportLayersModel(model, state.weights, config.outDir);
    await ctx.onFinished?.(config.outDir, summary, evaluation);
  }
  return summary;
}
