/**
 * Logging through pino: every record as a JSON line in the run's log file, and its message alone
 * on the terminal (so the example's `Train Epoch` / `Test set` lines keep their exact shape).
 */
import { dirname } from 'node:path';
import pino, { type Logger } from 'pino';
import { Terminal } from './terminal.js';
import { makeDirs } from './fs.js';

export type { Logger } from 'pino';

export interface LoggerOptions {
  name: string;
  /** JSON-lines file that receives every record (debug and up). */
  file?: string;
  terminal?: Terminal;
  /** Lowest level printed on the terminal. */
  terminalLevel?: pino.Level;
}

const LEVEL_VALUES = pino.levels.values;

export function createLogger(opts: LoggerOptions): Logger {
  const terminal = opts.terminal ?? new Terminal();
  const minTerminal = LEVEL_VALUES[opts.terminalLevel ?? 'info'];
  const terminalStream = {
    write(line: string): void {
      const record = JSON.parse(line) as { level: number; msg?: string };
      if (record.level < minTerminal || record.msg === undefined) return;
      if (record.level >= LEVEL_VALUES.warn) terminal.line(`${opts.name}: ${record.level >= LEVEL_VALUES.error ? 'error' : 'warning'}: ${record.msg}`, 'err');
      else terminal.line(record.msg);
    },
  };
  const streams: pino.StreamEntry[] = [{ level: 'debug', stream: terminalStream }];
  let file: ReturnType<typeof pino.destination> | undefined;
  if (opts.file) {
    makeDirs(dirname(opts.file));
    file = pino.destination({ dest: opts.file, sync: true, mkdir: true });
    streams.push({ level: 'debug', stream: file });
  }
  const logger = pino({ name: opts.name, level: 'debug', base: { pid: process.pid } }, pino.multistream(streams));
  if (file) openFiles.set(logger, file);
  return logger;
}

const openFiles = new WeakMap<Logger, ReturnType<typeof pino.destination>>();

/** Closes the logger's file (one process may run many trainings, e.g. a sweep). */
export function closeLogger(logger: Logger): void {
  const file = openFiles.get(logger);
  if (!file) return;
  openFiles.delete(logger);
  file.flushSync();
  file.end();
}
