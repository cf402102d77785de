/** File-system helpers for the folders a user names. */
import { mkdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

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
