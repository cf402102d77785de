/**
 * The checks a run passes before anything heavy loads (tfjs, the engines, ZeroMQ): the CLI runs
 * them first, so that a wrong --listen, --metrics, --min-workers or --out is one line within a
 * fraction of a second, and `train` runs them again for its other callers (sweep, tests).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE } from '../training/checkpoint.js';
import { UsageError, UserError } from '../util/errors.js';
import { makeWritableDir } from '../util/fs.js';
import { type MetricsAddress, parseMetricsAddress } from './metrics.js';
import type { DistributedOptions } from './train.js';

/** True for addresses only this machine can reach. */
export function isLoopbackAddress(addr: string): boolean {
  if (addr.startsWith('ipc://') || addr.startsWith('inproc://')) return true;
  return isLoopbackHost(/^tcp:\/\/(\[[^\]]+\]|[^:]+)/.exec(addr)?.[1] ?? '');
}

/** True for a host name or address (IPv6 in brackets) only this machine can reach. */
export function isLoopbackHost(host: string): boolean {
  return /^127\./.test(host) || host === 'localhost' || host === '[::1]';
}

/** Where workers connect: --listen, or a free loopback port. */
export function listenAddress(dist: Pick<DistributedOptions, 'listen'>): string {
  return dist.listen ?? 'tcp://127.0.0.1:*';
}

/** Workers reachable from beyond this machine only with keys, or with --insecure said aloud. */
export function checkListen(workers: number, dist: Pick<DistributedOptions, 'listen' | 'keysDir' | 'insecure'>): void {
  const listen = listenAddress(dist);
  if (workers > 0 && !dist.keysDir && !dist.insecure && !isLoopbackAddress(listen)) {
    throw new UsageError(`--listen ${listen} reaches beyond this machine: give --keys DIR (see coordinator keygen), or --insecure to train unauthenticated`);
  }
}

/** --metrics HOST:PORT, parsed: beyond this machine only with --keys or --insecure, as --listen. */
export function checkMetrics(metrics: string | undefined, dist: Pick<DistributedOptions, 'keysDir' | 'insecure'>): MetricsAddress | undefined {
  const address = metrics === undefined ? undefined : parseMetricsAddress(metrics);
  if (address && !dist.keysDir && !dist.insecure && !isLoopbackHost(address.host)) {
    throw new UsageError(`--metrics ${metrics} reaches beyond this machine: give --keys DIR (a deployment across machines), or --insecure`);
  }
  return address;
}

/** --min-workers against --workers: one line naming what is wrong. */
export function checkMinWorkers(minWorkers: number | undefined, workers: number): void {
  if (minWorkers === undefined) return;
  if (workers === 0) throw new UsageError('--min-workers needs --workers N with N ≥ 1 (--workers 0 trains in one process)');
  if (minWorkers < 1 || minWorkers > workers) throw new UsageError(`--min-workers ${minWorkers}: must be from 1 to --workers (${workers})`);
}

/** --in-process-worker against --workers: one of the N workers, so N ≥ 1. */
export function checkInProcessWorker(inProcessWorker: boolean | undefined, workers: number): void {
  if (inProcessWorker && workers === 0) throw new UsageError('--in-process-worker needs --workers N with N ≥ 1 (--workers 0 trains in one process already)');
}

/** Creates --out (or checks it) and proves it can be written, before any work starts. */
export function prepareOutDir(outDir: string, resume: boolean): void {
  makeWritableDir(outDir, '--out');
  if (!resume && existsSync(join(outDir, CHECKPOINT_FILE))) {
    throw new UserError(`--out ${outDir} already holds a run; continue it with --resume or choose another --out`);
  }
  if (resume && !existsSync(join(outDir, CHECKPOINT_FILE)) && !existsSync(join(outDir, PREVIOUS_CHECKPOINT_FILE))) {
    throw new UserError(`--resume: no checkpoint in ${outDir}`);
  }
}
