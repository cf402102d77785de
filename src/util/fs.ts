/** File-system helpers for the folders a user names. */
import { accessSync, constants, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { UserError } from './errors.js';

/**
 * mkdir -p, one level at a time. Node's own `mkdirSync(path, { recursive: true })` never returns
 * for some paths where a level cannot be made (e.g. under /proc: it retries ENOENT forever); this
 * throws the first error instead, with its code (ENOENT, EACCES, ENOTDIR, EROFS, …).
 */
export function makeDirs(path: string, mode?: number): void {
  const missing: string[] = [];
  let dir = resolve(path);
  for (;;) {
    try {
      if (statSync(dir).isDirectory()) break;
      const e = new Error(`${dir} is not a directory`) as NodeJS.ErrnoException;
      e.code = 'ENOTDIR';
      throw e;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    missing.push(dir);
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  for (const d of missing.reverse()) {
    try {
      mkdirSync(d, mode === undefined ? undefined : { mode });
    } catch (e) {
      // Made meanwhile by another process: fine.
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
}

/**
 * Makes the folder a flag names (mkdir -p) and proves a file can be written there, or throws one
 * line naming the flag and why not (`--out /proc/foo: cannot write there (ENOENT)`).
 */
export function makeWritableDir(dir: string, flag: string): void {
  try {
    makeDirs(dir);
    accessSync(dir, constants.W_OK);
    const probe = join(dir, `.write-test-${process.pid}`);
    writeFileSync(probe, '');
    rmSync(probe, { force: true });
  } catch (e) {
    throw new UserError(`${flag} ${dir}: cannot write there (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}
