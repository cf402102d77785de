#!/usr/bin/env node
/**
 * `worker --connect tcp://HOST:PORT`: joins a coordinator and computes gradients for it. The
 * worker proper (tfjs, the engines, ZeroMQ) loads once the command line has been checked.
 */
import { Command, CommanderError, Option } from 'commander';
import { UsageError, reportFatal } from '../util/errors.js';
import type { EngineChoice } from '../engine/choices.js';
import { engineOption, nonNegativeInt, positiveInt } from './flags.js';

const PROG = 'worker';

async function main(): Promise<void> {
  const program = new Command(PROG)
    .description('Joins a coordinator and computes gradients for it')
    .addHelpText(
      'after',
      '\nExit status: 0 the run finished; 75 the coordinator stopped early or went silent (start again to rejoin);\n143 stopped by SIGTERM, 130 by SIGINT; 78 refused by the coordinator (another model or protocol version, or in\n--deterministic runs another engine or build: another try cannot help); 77 put out of the run by the coordinator\n(its key revoked, or a result that failed a spot check: an error of this worker alone); 1 an error (refused keys, no coordinator\nwithin --connect-timeout); 2 bad usage.',
    )
    .exitOverride()
    .configureOutput({ outputError: () => {} })
    .requiredOption('--connect <addr>', 'the coordinator, e.g. tcp://coordinator:5555')
    .addOption(new Option('--gpu <i>', 'pin this worker to GPU I').argParser(nonNegativeInt))
    .addOption(new Option('--no-cuda', 'never use a GPU'))
    .addOption(engineOption())
    .addOption(new Option('--connect-timeout <s>', 'give up when no coordinator answers within S seconds').argParser(positiveInt).default(60))
    .addOption(new Option('--keys <dir>', 'authenticate and encrypt with the keys in DIR (see coordinator keygen)'))
    .addOption(
      new Option(
        '--data <dir>',
        "read training samples from the MNIST IDX files in DIR (default: the bundled copy); a coordinator training on the same set sends sample indices instead of pixels; 'none': read none",
      ),
    )
    .action(async (flags: { connect: string; gpu?: number; cuda: boolean; engine: EngineChoice; connectTimeout: number; keys?: string; data?: string }) => {
      if (!/^(tcp|ipc|inproc):\/\/.+/.test(flags.connect)) throw new UsageError(`--connect ${flags.connect}: expected an address like tcp://HOST:PORT`);
      // Spawned by a local coordinator: leave as soon as it is gone, whatever killed it.
      if (process.send) process.on('disconnect', () => process.exit(0));
      const [{ createLogger }, { runWorker }, { loadWorkerKeys }, { WORKER_SECRET_ENV }] = await Promise.all([
        import('../util/logger.js'),
        import('../worker/worker.js'),
        import('../protocol/keys.js'),
        import('../protocol/messages.js'),
      ]);
      const logger = createLogger({ name: PROG });
      const keys = flags.keys ? loadWorkerKeys(flags.keys) : undefined;
      // A spawning coordinator's secret for this worker: kept from anything this process starts.
      const secret = process.env[WORKER_SECRET_ENV];
      delete process.env[WORKER_SECRET_ENV];
      process.exitCode = await runWorker({
        connect: flags.connect,
        gpu: flags.gpu,
        noCuda: !flags.cuda,
        engine: flags.engine,
        logger,
        connectTimeoutMs: flags.connectTimeout * 1000,
        keys,
        secret,
        dataDir: flags.data,
      });
      // The IPC channel to a spawning coordinator would keep the process alive.
      process.disconnect?.();
    });
  try {
    await program.parseAsync(process.argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.exitCode === 0) return;
      throw new UsageError(err.message.replace(/^error: /, ''));
    }
    throw err;
  }
}

main().catch((err) => reportFatal(PROG, err));
