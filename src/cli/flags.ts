/**
 * The training flags, named and defaulted as in the PyTorch MNIST example, plus the product's own.
 * Shared by `coordinator` (train) and `coordinator sweep`.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { availableParallelism } from 'node:os';
import { ENGINE_CHOICES, type EngineChoice } from '../engine/choices.js';
import { visibleGpuCount } from '../engine/gpus.js';
import { DEFAULTS, type LrSchedule, type LrScaling, type TrainConfig, applyModelDefaults } from '../config.js';
import { MODEL_NAMES, isModelName } from '../models/types.js';
import { GRAD_DTYPES, type GradDtype } from '../protocol/grad-dtype.js';
import { UsageError } from '../util/errors.js';

export function positiveInt(value: string): number {
  const n = Number(value);
  if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError('must be a positive integer.');
  return n;
}

export function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(n)) throw new InvalidArgumentError('must be an integer ≥ 0.');
  return n;
}

export function positiveNumber(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('must be a number > 0.');
  return n;
}

export function nonNegativeNumber(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError('must be a number ≥ 0.');
  return n;
}

export function momentumValue(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0 || n >= 1) throw new InvalidArgumentError('must be a number in [0, 1).');
  return n;
}

export function modelName(value: string): string {
  if (!isModelName(value)) throw new InvalidArgumentError(`must be one of ${MODEL_NAMES.join(', ')}.`);
  return value;
}

/** --engine, for the coordinator and the worker alike. */
export function engineOption(): Option {
  return new Option('--engine <name>', 'which engine computes: auto picks the best available (tfjs-node-gpu, webgpu on a hardware GPU, tfjs-node, wasm)')
    .choices(ENGINE_CHOICES as string[])
    .default(DEFAULTS.engine);
}

/** Options as commander hands them over (camel-cased flag names). */
export interface TrainFlags {
  batchSize: number;
  batchSizePerWorker?: number;
  lrScaling?: LrScaling;
  warmupEpochs: number;
  gradDtype: GradDtype;
  testBatchSize: number;
  epochs: number;
  lr: number;
  momentum: number;
  momentumFinal?: number;
  momentumRampSteps?: number;
  seed: number;
  logInterval: number;
  cuda: boolean;
  engine: EngineChoice;
  workers?: number;
  deterministic: boolean;
  shardSize: number;
  model: string;
  trainLimit?: number;
  testLimit?: number;
  data?: string;
  out?: string;
  checkpointEvery: number;
  augment?: boolean;
  lrSchedule: LrSchedule;
}

/** Adds the training flags to `cmd`; each shows its default in --help. */
export function addTrainingFlags(cmd: Command): Command {
  return cmd
    .addOption(new Option('--batch-size <n>', 'input batch size for training').argParser(positiveInt).default(DEFAULTS.batchSize))
    .addOption(
      new Option('--batch-size-per-worker <n>', 'weak scaling: each worker takes N samples a step, the global batch is N × workers (instead of --batch-size)')
        .argParser(positiveInt)
        .conflicts('batchSize'),
    )
    .addOption(
      new Option('--lr-scaling <rule>', 'with --batch-size-per-worker: linear multiplies --lr by the number of workers, after a warm-up; none keeps --lr (default: linear)').choices([
        'linear',
        'none',
      ]),
    )
    .addOption(new Option('--warmup-epochs <e>', 'epochs (fractions allowed) over which --lr-scaling linear rises from --lr to --lr × workers').argParser(nonNegativeNumber).default(DEFAULTS.warmupEpochs))
    .addOption(new Option('--grad-dtype <dtype>', 'what gradients and weights travel as between coordinator and workers').choices(GRAD_DTYPES as unknown as string[]).default(DEFAULTS.gradDtype))
    .addOption(new Option('--test-batch-size <n>', 'input batch size for testing').argParser(positiveInt).default(DEFAULTS.testBatchSize))
    .addOption(new Option('--epochs <n>', 'number of epochs to train').argParser(positiveInt).default(DEFAULTS.epochs))
    .addOption(new Option('--lr <lr>', 'learning rate').argParser(positiveNumber).default(DEFAULTS.lr))
    .addOption(new Option('--momentum <m>', 'SGD momentum').argParser(momentumValue).default(DEFAULTS.momentum))
    .addOption(new Option('--momentum-final <m>', 'raise momentum linearly to this value during training (the study: 0.99)').argParser(momentumValue))
    .addOption(new Option('--momentum-ramp-steps <n>', 'steps over which momentum reaches --momentum-final (default: the whole run)').argParser(positiveInt))
    .addOption(new Option('--seed <s>', 'random seed').argParser(nonNegativeInt).default(DEFAULTS.seed))
    .addOption(new Option('--log-interval <n>', 'how many batches to wait before logging training status').argParser(positiveInt).default(DEFAULTS.logInterval))
    .addOption(new Option('--no-cuda', 'disables GPU training'))
    .addOption(engineOption())
    .addOption(new Option('--workers <n>', 'worker processes; 0 = single-node fallback (one process, no sockets) (default: one per visible GPU, else one per CPU core)').argParser(nonNegativeInt))
    .addOption(new Option('--deterministic', 'bitwise-reproducible weights whatever the number of workers').default(DEFAULTS.deterministic))
    .addOption(new Option('--shard-size <n>', 'deterministic mode: samples per shard (one gradient per shard)').argParser(positiveInt).default(DEFAULTS.shardSize))
    .addOption(new Option('--model <name>', `model: ${MODEL_NAMES.join(', ')}`).argParser(modelName).default(DEFAULTS.model))
    .addOption(new Option('--train-limit <n>', 'use only the first N training samples').argParser(positiveInt))
    .addOption(new Option('--test-limit <n>', 'use only the first N test samples').argParser(positiveInt))
    .addOption(new Option('--data <dir>', 'read MNIST from DIR (the four IDX files, raw or .gz) (default: the bundled copy)'))
    .addOption(new Option('--out <dir>', 'where everything of the run goes (default: a new folder under runs/)'))
    .addOption(new Option('--augment', 'seeded random rotation, scale and shift of training images (strong: on)'))
    .addOption(new Option('--no-augment', 'no augmentation'))
    .addOption(new Option('--lr-schedule <name>', 'learning-rate schedule: constant or cosine (strong: cosine)').choices(['constant', 'cosine']).default(DEFAULTS.lrSchedule))
    .addOption(new Option('--checkpoint-every <steps>', 'also checkpoint every N steps; 0 = at epoch ends only').argParser(nonNegativeInt).default(DEFAULTS.checkpointEvery));
}

/**
 * The run's configuration from the flags. `given` names the flags set on the command line
 * (commander attribute names); the model's own defaults fill in the others (config.ts MODEL_DEFAULTS).
 */
export function configFromFlags(flags: TrainFlags, defaults: { workers: number; outDir: string }, given?: ReadonlySet<string>): TrainConfig {
  if (!isModelName(flags.model)) throw new InvalidArgumentError(`unknown model ${flags.model}`);
  if (flags.lrScaling === 'linear' && flags.batchSizePerWorker === undefined) {
    throw new UsageError('--lr-scaling linear scales by the number of workers under weak scaling: it needs --batch-size-per-worker');
  }
  const config: TrainConfig = {
    model: flags.model,
    batchSize: flags.batchSize,
    testBatchSize: flags.testBatchSize,
    epochs: flags.epochs,
    lr: flags.lr,
    momentum: flags.momentum,
    momentumFinal: flags.momentumFinal,
    momentumRampSteps: flags.momentumRampSteps,
    seed: flags.seed,
    logInterval: flags.logInterval,
    noCuda: !flags.cuda,
    engine: flags.engine ?? DEFAULTS.engine,
    workers: flags.workers ?? defaults.workers,
    deterministic: flags.deterministic,
    shardSize: flags.shardSize,
    trainLimit: flags.trainLimit,
    testLimit: flags.testLimit,
    dataDir: flags.data,
    outDir: flags.out ?? defaults.outDir,
    checkpointEvery: flags.checkpointEvery,
    augment: flags.augment ?? DEFAULTS.augment,
    lrSchedule: flags.lrSchedule,
    gradDtype: flags.gradDtype ?? DEFAULTS.gradDtype,
  };
  const withDefaults = given ? applyModelDefaults(config, given) : config;
  return flags.batchSizePerWorker === undefined ? withDefaults : weakScaling(withDefaults, flags.batchSizePerWorker, flags.lrScaling ?? 'linear', flags.warmupEpochs ?? DEFAULTS.warmupEpochs);
}

/** Weak scaling: the global batch is B × N (N = workers, 1 for the single-node fallback). */
function weakScaling(config: TrainConfig, perWorker: number, lrScaling: LrScaling, warmupEpochs: number): TrainConfig {
  return { ...config, batchSize: perWorker * Math.max(1, config.workers), batchSizePerWorker: perWorker, lrScaling, warmupEpochs };
}

/** One worker per visible GPU, else one per CPU core. */
export function defaultWorkers(noCuda: boolean): number {
  const gpus = noCuda ? 0 : visibleGpuCount();
  return gpus > 0 ? gpus : availableParallelism();
}

/** Flag attribute names → the TrainConfig keys they set (where the two differ). */
const CONFIG_KEYS: Record<string, string> = { cuda: 'noCuda', data: 'dataDir', out: 'outDir' };

/** The TrainConfig key a flag sets. */
export function configKey(attributeName: string): string {
  return CONFIG_KEYS[attributeName] ?? attributeName;
}

/** The TrainConfig keys of the flags a command was given on the command line. */
export function givenConfigKeys(cmd: Command): Set<string> {
  return new Set(givenFlags(cmd).map(configKey));
}

/** Attribute names of the flags given on the command line (not defaulted). */
export function givenFlags(cmd: Command): string[] {
  return cmd.options.map((o) => o.attributeName()).filter((name) => cmd.getOptionValueSource(name) === 'cli');
}
