/**
 * One training run, start to finish: output folder, logging, engine, data, model, state (fresh or
 * resumed), the gradient source (this process, or workers over ZeroMQ), signals, the loop.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { AUGMENTATION, type TrainConfig } from '../config.js';
import { loadMnist, trainDataIdentity } from '../data/mnist.js';
import { engineIdentity, initEngine, visibleGpuCount } from '../engine/backend.js';
import { type ModelDef, createModel, describeModel, initialWeights, modelDigest, modelDigests, paramLayout } from '../models/index.js';
import { buildId } from '../util/build.js';
import { type GradientOptions, type ShardData, createGradientComputer } from '../training/gradients.js';
import { loadLatestCheckpoint } from '../training/checkpoint.js';
import { UsageError } from '../util/errors.js';
import { type RunSummary, SUMMARY_FILE, freshState, runTraining, truncateMetrics } from '../training/loop.js';
import { evenShards, fixedSizeShards } from '../training/schedule.js';
import { type GradientSource, createLocalSource, travelledWeights } from '../training/source.js';
import { type GradDtype, roundTrip } from '../protocol/grad-dtype.js';
import { type CoordinatorKeys, loadCoordinatorKeys } from '../protocol/keys.js';
import { type Logger, closeLogger, createLogger } from '../util/logger.js';
import { Terminal } from '../util/terminal.js';
import { writeRunArtifacts } from './artifacts.js';
import { lockRunFolder } from './run-lock.js';
import { WorkerPool } from './pool.js';
import { InProcessWorker } from './in-process-worker.js';
import { type MetricsServer, RunMetrics, serveMetrics } from './metrics.js';
import { checkInProcessWorker, checkListen, checkMetrics, checkMinWorkers, listenAddress, prepareOutDir } from './preflight.js';

export const LOG_FILE = 'log.jsonl';

/**
 * Recomputes a shard in this process: is its gradient non-finite here too? (see PoolOptions.verifyShard)
 * Under a 16-bit --grad-dtype, on the weights and with the gradient rounded as they travel: a float16
 * overflow is then reproduced, a verdict of divergence, not of a faulty worker.
 */
function shardVerifier(model: ModelDef, opts: GradientOptions, gradDtype: GradDtype): (weights: Float32Array, shard: ShardData) => Promise<boolean> {
  // In one piece: the verdict then comes before the sender's next message is read.
  const computer = createGradientComputer(model, { ...opts, yielding: false });
  const rounded = new Float32Array(gradDtype === 'float32' ? 0 : paramLayout(model).total);
  return async (weights, shard) => {
    const r = await computer.compute(travelledWeights(weights, gradDtype, rounded), shard);
    roundTrip(r.gradSum, gradDtype);
    return !(Number.isFinite(r.lossSum) && r.gradSum.every(Number.isFinite));
  };
}

/** Computes a shard here for a spot check (--verify-fraction), pausing for the event loop as it goes. */
function shardRecomputer(
  model: ModelDef,
  opts: GradientOptions,
  gradDtype: GradDtype,
): (weights: Float32Array, shard: ShardData) => Promise<{ gradSum: Float32Array; lossSum: number }> {
  // Its own computer (and engine memory): the spot checks run one at a time, beside the non-finite
  // verifier's, and yield so that heartbeats and results are served during a recomputation.
  // Under a 16-bit --grad-dtype, on the weights and with the gradient rounded as they travel: what
  // an honest worker's result is once the reducer has widened it.
  const computer = createGradientComputer(model, { ...opts, yielding: true });
  const rounded = new Float32Array(gradDtype === 'float32' ? 0 : paramLayout(model).total);
  return async (weights, shard) => {
    const r = await computer.compute(travelledWeights(weights, gradDtype, rounded), shard);
    roundTrip(r.gradSum, gradDtype);
    return { gradSum: r.gradSum, lossSum: r.lossSum };
  };
}

/** The most samples one shard of this run holds (the batch cut as the training loop cuts it). */
export function largestShard(config: Pick<TrainConfig, 'batchSize' | 'deterministic' | 'shardSize' | 'workers'>, trainCount: number): number {
  const batch = Math.min(config.batchSize, trainCount);
  const ranges = config.deterministic ? fixedSizeShards(batch, config.shardSize) : evenShards(batch, Math.max(1, config.workers));
  return Math.max(0, ...ranges.map(([start, end]) => end - start));
}

export interface DistributedOptions {
  /** Start the workers here (else wait for them to connect to `listen`). */
  spawn: boolean;
  /** Where workers connect; spawned workers use a free loopback port when absent. */
  listen?: string;
  connectTimeoutS: number;
  workerTimeoutS: number;
  /** With no worker left, how long to wait for one (join or rejoin) before giving up. */
  emptyPoolTimeoutS?: number;
  /**
   * --min-workers M: start once M of the --workers N have joined, and let steps wait while fewer
   * than M are in the pool. Absent: start with all N, go on with any.
   */
  minWorkers?: number;
  /** --keys DIR: CURVE encryption and an allow-list of worker keys. */
  keysDir?: string;
  /** --insecure: allow listening beyond loopback without keys. */
  insecure: boolean;
  /** --verify-fraction: the probability (0..1) that a worker's result is recomputed here and compared. */
  verifyFraction?: number;
  /** --in-process-worker: one of the --workers N computes in the coordinator's process; N − 1 are started (or awaited). */
  inProcessWorker?: boolean;
}

export { checkInProcessWorker, checkMinWorkers, isLoopbackAddress, isLoopbackHost, prepareOutDir } from './preflight.js';

export interface TrainOptions {
  resume: boolean;
  /** Flags given on the command line (camel-cased), so that --resume knows what was asked for. */
  given?: ReadonlySet<string>;
  distributed: DistributedOptions;
  terminal?: Terminal;
  /** --metrics HOST:PORT: serve Prometheus metrics at http://HOST:PORT/metrics while the run lasts. */
  metrics?: string;
  /**
   * A label every metric carries, `run="NAME"` (a sweep's runs are served one after another on the same
   * address: a scraper tells them apart by it).
   */
  metricsRun?: string;
}

export async function train(requested: TrainConfig, opts: TrainOptions): Promise<RunSummary> {
  requested = { ...requested, outDir: resolve(requested.outDir) };
  const dist = opts.distributed;
  // A resumed run may take its worker count from its checkpoint: checked again once that is read.
  if (!opts.resume || opts.given?.has('workers')) checkMinWorkers(dist.minWorkers, requested.workers);
  const listen = listenAddress(dist);
  checkListen(requested.workers, dist);
  // The same rule as --listen: whoever deploys beyond this machine says so with --keys or --insecure.
  const metricsAddress = checkMetrics(opts.metrics, dist);
  const keys = dist.keysDir ? loadCoordinatorKeys(dist.keysDir) : undefined;
  if (dist.keysDir && dist.spawn && requested.workers > 0 && !existsSync(join(dist.keysDir, 'worker.secret'))) {
    throw new UsageError(`--keys ${dist.keysDir} holds no worker.secret: the workers this coordinator starts use the shared pair (or give --no-spawn)`);
  }

  prepareOutDir(requested.outDir, opts.resume);
  const lock = lockRunFolder(requested.outDir);
  let metricsServer: MetricsServer | undefined;
  try {
    const metrics = metricsAddress ? new RunMetrics() : undefined;
    if (metrics && opts.metricsRun !== undefined) metrics.registry.setDefaultLabels({ run: opts.metricsRun });
    if (metrics && metricsAddress) metricsServer = await serveMetrics(metrics.registry, metricsAddress);
    return await trainLocked(requested, opts, keys, listen, metrics && metricsServer ? { metrics, url: metricsServer.url } : undefined);
  } finally {
    await metricsServer?.close();
    lock.release();
  }
}

async function trainLocked(
  requested: TrainConfig,
  opts: TrainOptions,
  keys: CoordinatorKeys | undefined,
  listen: string,
  served: { metrics: RunMetrics; url: string } | undefined,
): Promise<RunSummary> {
  const dist = opts.distributed;
  const terminal = opts.terminal ?? new Terminal();
  const logger = createLogger({ name: 'coordinator', file: join(requested.outDir, LOG_FILE), terminal });

  const loaded = opts.resume ? loadLatestCheckpoint(requested.outDir) : undefined;
  for (const problem of loaded?.skipped ?? []) logger.warn(`skipped a checkpoint: ${problem}`);
  // A resumed run keeps its own configuration; only how it is executed may change.
  const config: TrainConfig = loaded ? resumedConfig(loaded.state.config, requested, opts.given ?? new Set(), logger) : requested;
  const summaryPath = join(config.outDir, SUMMARY_FILE);
  if (loaded && loaded.state.epoch > config.epochs && existsSync(summaryPath)) {
    // Nothing left to train: say so, and leave the run's files as they are.
    const done = JSON.parse(readFileSync(summaryPath, 'utf8')) as RunSummary;
    logger.info(
      `the run in ${config.outDir} is already finished: ${config.epochs} epochs, test accuracy ${(100 * done.test_accuracy).toFixed(2)}%; nothing to do (--epochs N trains it further)`,
    );
    closeLogger(logger);
    return done;
  }

  const engine = await initEngine({ noCuda: config.noCuda, engine: config.engine });
  const data = loadMnist({ dir: config.dataDir, trainLimit: config.trainLimit, testLimit: config.testLimit });
  const model = createModel(config.model);
  const size = paramLayout(model).total;
  logger.info({ config, backend: engine.name, device: engine.device }, `config: ${JSON.stringify(config)}`);
  logger.info(`engine: ${engine.name} on ${engine.device}; data: ${data.train.count} training, ${data.test.count} test samples from ${data.source}`);
  logger.info(describeModel(model));
  if (served) logger.info(`Prometheus metrics at ${served.url}`);

  checkMinWorkers(dist.minWorkers, config.workers);
  checkInProcessWorker(dist.inProcessWorker, config.workers);

  let state = loaded?.state;
  if (state) {
    state.config = config;
    truncateMetrics(config.outDir, state.step);
    logger.info({ step: state.step, epoch: state.epoch }, `resuming from ${loaded?.file} at epoch ${state.epoch}, step ${state.step}`);
  } else {
    state = freshState(config, initialWeights(model, config.seed));
  }

  const gradientOptions: GradientOptions = config.augment ? { augment: AUGMENTATION } : {};
  // What this process computes on, as summary.json, the spot checks and the in-process worker name it.
  const thisProcess = { backend: engine.name, device: engine.device, ...(engine.adapter ? { adapter: engine.adapter } : {}), engine: engineIdentity(engine), build: buildId() };
  const trainData = trainDataIdentity(data.train);
  const source: GradientSource =
    config.workers === 0
      ? createLocalSource(model, size, gradientOptions, config.gradDtype)
      : await WorkerPool.start({
          listen,
          workers: config.workers,
          ...(dist.minWorkers !== undefined ? { minWorkers: dist.minWorkers } : {}),
          identity: {
            build: buildId(),
            model: model.name,
            modelDigest: modelDigest(model),
            deterministic: config.deterministic,
            // --engine auto: the coordinator may compute on another engine than its workers.
            ...(config.engine !== 'auto' ? { engine: engineIdentity(engine) } : {}),
          },
          spawn: opts.distributed.spawn,
          gpus: config.noCuda ? 0 : visibleGpuCount(),
          noCuda: config.noCuda,
          engine: config.engine,
          model: model.name,
          params: size,
          maxShardSamples: largestShard(config, data.train.count),
          logger,
          connectTimeoutMs: opts.distributed.connectTimeoutS * 1000,
          workerTimeoutMs: opts.distributed.workerTimeoutS * 1000,
          ...(dist.emptyPoolTimeoutS ? { allGoneTimeoutMs: dist.emptyPoolTimeoutS * 1000 } : {}),
          keys,
          keysDir: dist.keysDir ? resolve(dist.keysDir) : undefined,
          verifyShard: shardVerifier(model, gradientOptions, config.gradDtype ?? 'float32'),
          verifyFraction: dist.verifyFraction ?? 0,
          ...(dist.verifyFraction ? { recomputeShard: shardRecomputer(model, gradientOptions, config.gradDtype ?? 'float32') } : {}),
          coordinatorEngine: thisProcess,
          augment: gradientOptions.augment,
          trainData,
          // Spawned workers read the coordinator's own copy of the data, and are sent sample indices.
          ...(config.dataDir ? { workerArgs: ['--data', resolve(config.dataDir)] } : {}),
          onBound: (pool) => served?.metrics.watchPool(pool),
          gradDtype: config.gradDtype ?? 'float32',
          ...(dist.inProcessWorker
            ? {
                inProcessWorker: new InProcessWorker(model, gradientOptions, config.gradDtype ?? 'float32', { ...thisProcess, models: modelDigests(), trainData }),
              }
            : {}),
        });

  const abort = new AbortController();
  let caught: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (abort.signal.aborted) return;
    caught = signal;
    logger.warn(`${signal} received: checkpointing before the current step`);
    abort.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let finished = false;
  try {
    const summary = await runTraining({
      config,
      model,
      data,
      source,
      logger,
      terminal,
      backend: engine.name,
      device: thisProcess,
      state,
      signal: abort.signal,
      observer: served?.metrics.observer,
      onFinished: (outDir, summary, evaluation) => writeRunArtifacts(outDir, { config, summary, evaluation, data }),
    });
    finished = !summary.interrupted;
    // The shell's convention for a run ended by a signal: 128 + its number.
    if (summary.interrupted) process.exitCode = caught === 'SIGINT' ? 130 : 143;
    else {
      logger.info(
        { summary },
        `done: test accuracy ${(100 * summary.test_accuracy).toFixed(2)}%, ${summary.train_samples_per_s.toFixed(0)} training samples/s, results in ${config.outDir}`,
      );
    }
    return summary;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await source.close(finished);
    closeLogger(logger);
  }
}

/**
 * A resumed run keeps its own configuration, so that it continues the same training; only how
 * it is executed (workers, output, data location, logging) and how long it runs may change.
 */
function resumedConfig(stored: TrainConfig, requested: TrainConfig, given: ReadonlySet<string>, logger: Logger): TrainConfig {
  if (stored.batchSizePerWorker !== undefined && requested.workers !== stored.workers && given.has('workers')) {
    logger.warn(`weak scaling: the run keeps its global batch of ${stored.batchSize} (${stored.batchSizePerWorker} per worker × ${stored.batchSize / stored.batchSizePerWorker}) and its learning rate with ${requested.workers} workers`);
  }
  const changeable = new Set(['workers', 'noCuda', 'cuda', 'engine', 'dataDir', 'data', 'logInterval', 'checkpointEvery', 'epochs', 'out']);
  const ignored = [...given].filter((name) => !changeable.has(name) && name in stored && (stored as unknown as Record<string, unknown>)[name] !== (requested as unknown as Record<string, unknown>)[name]);
  if (ignored.length > 0) logger.warn(`--resume keeps the run's configuration; ignoring ${ignored.map((n) => `--${n.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(', ')}`);
  return {
    ...stored,
    workers: given.has('workers') ? requested.workers : stored.workers,
    outDir: requested.outDir,
    noCuda: requested.noCuda,
    engine: requested.engine,
    dataDir: given.has('data') ? requested.dataDir : stored.dataDir,
    logInterval: given.has('logInterval') ? requested.logInterval : stored.logInterval,
    checkpointEvery: given.has('checkpointEvery') ? requested.checkpointEvery : stored.checkpointEvery,
    epochs: given.has('epochs') ? requested.epochs : stored.epochs,
  };
}
