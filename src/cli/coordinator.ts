#!/usr/bin/env node
/**
 * `coordinator`: trains MNIST, alone (--workers 0) or with workers over ZeroMQ.
 * Subcommands: keygen, sweep, visualize (see --help).
 *
 * Only commander and the flags' own checks load at start: tfjs, the engines and ZeroMQ are
 * imported (dynamically) once the command line has been checked, so that --help and a usage error
 * come at once.
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { makeDirs } from '../util/fs.js';
import type { DistributedOptions } from '../coordinator/train.js';
import { UsageError, reportFatal } from '../util/errors.js';
import { type TrainFlags, addTrainingFlags, configFromFlags, defaultWorkers, givenConfigKeys, givenFlags, positiveInt } from './flags.js';
import { registerSweepCommand } from './sweep.js';
import { registerVisualizeCommand } from './visualize.js';
import { registerEvaluateCommand, registerPredictCommand } from './evaluate.js';

interface DistributedFlags {
  resume: boolean;
  spawn: boolean;
  listen?: string;
  connectTimeout: number;
  workerTimeout: number;
  emptyPoolTimeout: number;
  minWorkers?: number;
  keys?: string;
  insecure: boolean;
  metrics?: string;
  verifyFraction: number;
  inProcessWorker: boolean;
}

/** --verify-fraction: a probability, 0 to 1. */
function fraction(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0 || n > 1) throw new InvalidArgumentError('must be a number from 0 to 1.');
  return n;
}

const PROG = 'coordinator';

/** Keys live with the user's configuration, outside any working tree: $XDG_CONFIG_HOME/mnist-ddp/keys. */
function defaultKeysDir(): string {
  return join(process.env.XDG_CONFIG_HOME || join(homedir(), '.config'), 'mnist-ddp', 'keys');
}

/**
 * A new folder under runs/ named for the time and the model, made here and now so that two runs
 * started in the same second get two folders (runs/20261130-081500-net, …-net-2).
 */
function claimRunFolder(model: string): string {
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  makeDirs('runs');
  for (let n = 1; ; n++) {
    const dir = join('runs', `${stamp}-${model}${n > 1 ? `-${n}` : ''}`);
    try {
      mkdirSync(dir);
      return dir;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
}

export function buildProgram(): Command {
  const program = new Command(PROG)
    .description('Data-parallel MNIST training: a coordinator and its workers over ZeroMQ')
    .showHelpAfterError(false)
    .enablePositionalOptions()
    .exitOverride()
    .configureOutput({ outputError: () => {} });
  addTrainingFlags(program)
    .option('--resume', 'continue the run in --out DIR from its last checkpoint', false)
    .option('--no-spawn', 'do not start workers: wait for --workers N of them to connect to --listen')
    .option('--listen <addr>', 'address workers connect to, e.g. tcp://0.0.0.0:5555 (default: a free loopback port)')
    .addOption(new Option('--connect-timeout <s>', 'give up when the workers have not all joined within S seconds').argParser(positiveInt).default(60))
    .addOption(new Option('--worker-timeout <s>', 'declare a silent worker lost after S seconds').argParser(positiveInt).default(5))
    .addOption(new Option('--min-workers <m>', 'start once M of the --workers N have joined (the others are admitted as they come); steps wait while fewer than M are in the pool (default: N to start, any one to go on)').argParser(positiveInt))
    .addOption(new Option('--empty-pool-timeout <s>', 'with no worker left (or fewer than --min-workers), wait S seconds for more to join or rejoin before giving up').argParser(positiveInt).default(30))
    .option('--keys <dir>', 'authenticate and encrypt the worker link with the keys in DIR (see keygen)')
    .option('--insecure', 'allow --listen and --metrics beyond loopback without --keys', false)
    .option('--metrics <addr>', 'serve Prometheus metrics at http://ADDR/metrics while training, e.g. 127.0.0.1:9400 (beyond loopback: with --keys or --insecure)')
    .option('--in-process-worker', 'one of the --workers N computes in the coordinator\'s own process, which starts N − 1 worker processes (or waits for N − 1): no process only waits, and that shard costs no message (machines with few cores)', false)
    .addOption(
      new Option('--verify-fraction <p>', 'recompute a random fraction P of the workers\' results here and put out any worker whose result does not match (0 = none)')
        .argParser(fraction)
        .default(0),
    )
    .action(async (flags: TrainFlags & DistributedFlags, cmd: Command) => {
      if (flags.resume && !flags.out) throw new UsageError('--resume needs --out DIR (the run to continue)');
      if (!flags.spawn && !flags.listen) throw new UsageError('--no-spawn needs --listen ADDR (where the workers connect)');
      if (flags.listen && !/^(tcp|ipc):\/\/.+/.test(flags.listen)) throw new UsageError(`--listen ${flags.listen}: expected an address like tcp://0.0.0.0:5555`);
      if (!flags.spawn && flags.workers === 0) throw new UsageError('--no-spawn needs --workers N with N ≥ 1');
      const config = configFromFlags(flags, { workers: defaultWorkers(!flags.cuda), outDir: flags.out ?? claimRunFolder(flags.model) }, givenConfigKeys(cmd));
      const distributed: DistributedOptions = {
        spawn: flags.spawn,
        listen: flags.listen,
        connectTimeoutS: flags.connectTimeout,
        workerTimeoutS: flags.workerTimeout,
        emptyPoolTimeoutS: flags.emptyPoolTimeout,
        minWorkers: flags.minWorkers,
        keysDir: flags.keys,
        insecure: flags.insecure,
        verifyFraction: flags.verifyFraction,
        inProcessWorker: flags.inProcessWorker,
      };
      const given = new Set(givenFlags(cmd));
      const { checkInProcessWorker, checkListen, checkMetrics, checkMinWorkers, prepareOutDir } = await import('../coordinator/preflight.js');
      // A resumed run may take its worker count from its checkpoint: train checks that once read.
      if (!flags.resume || given.has('workers')) {
        checkMinWorkers(distributed.minWorkers, config.workers);
        checkInProcessWorker(distributed.inProcessWorker, config.workers);
      }
      checkListen(config.workers, distributed);
      checkMetrics(flags.metrics, distributed);
      prepareOutDir(config.outDir, flags.resume);
      const { train } = await import('../coordinator/train.js');
      await train(config, { resume: flags.resume, metrics: flags.metrics, given, distributed });
    });
  program
    .command('keygen')
    .description('make the CURVE keys that --keys DIR reads (coordinator and worker key pairs); --worker NAME adds a pair of its own for one worker')
    .option('--out <dir>', 'where to write the keys (secrets: keep them out of any repository)', defaultKeysDir())
    .option('--worker <name>', 'add a key pair for worker NAME to the keys in DIR: DIR/allowed/NAME.public (the allow-list entry) and DIR/workers/NAME (its --keys folder)')
    .option('--force', 'replace keys already in DIR', false)
    .action(async (flags: { out: string; force: boolean; worker?: string }) => {
      const { generateKeys, generateWorkerKey } = await import('../protocol/keys.js');
      if (flags.worker !== undefined) {
        const { files } = generateWorkerKey(flags.out, flags.worker, flags.force);
        const own = join(flags.out, 'workers', flags.worker);
        process.stdout.write(
          `wrote ${files.join(', ')}\nstart worker ${flags.worker} with --keys ${own}; remove ${files[0]} to revoke it\n`,
        );
        return;
      }
      const { files } = generateKeys(flags.out, flags.force);
      process.stdout.write(`wrote ${files.join(', ')}\nstart the coordinator and every worker with --keys ${flags.out}\n`);
    });
  registerSweepCommand(program);
  registerVisualizeCommand(program);
  registerEvaluateCommand(program);
  registerPredictCommand(program);
  return program;
}

async function main(): Promise<void> {
  try {
    await buildProgram().parseAsync(process.argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.exitCode === 0 || err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return;
      throw new UsageError(err.message.replace(/^error: /, ''));
    }
    throw err;
  }
}

main().catch((err) => reportFatal(PROG, err));
