/**
 * One live run per folder. A run holds `run.lock` in its --out folder and touches it every few
 * seconds; a second run started there while its holder lives is refused. On the holder's own host
 * the holder lives while its process does (a run killed with SIGKILL is resumed at once); from
 * another host (a pod restarted elsewhere on a shared volume) while the lock was touched in the last
 * 10 s.
 */
import { closeSync, openSync, readFileSync, rmSync, statSync, utimesSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { UserError } from '../util/errors.js';

export const LOCK_FILE = 'run.lock';
const TOUCH_MS = 2000;
/** A lock untouched this long belongs to a run that is gone. */
export const STALE_MS = 10_000;

export interface RunLock {
  release(): void;
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists, under another user.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function lockRunFolder(outDir: string, now = Date.now): RunLock {
  const path = join(outDir, LOCK_FILE);
  const owner = `${JSON.stringify({ pid: process.pid, host: hostname(), since: new Date().toISOString() })}\n`;
  for (let attempt = 0; ; attempt++) {
    try {
      const fd = openSync(path, 'wx');
      writeSync(fd, owner);
      closeSync(fd);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw e;
      let age = Infinity;
      let holder = 'another run';
      let alive: boolean | undefined;
      try {
        age = now() - statSync(path).mtimeMs;
        const h = JSON.parse(readFileSync(path, 'utf8')) as { pid?: number; host?: string };
        holder = `pid ${h.pid} on ${h.host}`;
        if (h.host === hostname() && typeof h.pid === 'number') alive = h.pid !== process.pid && processExists(h.pid);
      } catch {
        // unreadable or half-written: judged by its age alone
      }
      if (alive ?? age < STALE_MS) throw new UserError(`--out ${outDir} is in use by a live run (${holder}); choose another --out, or wait for it to end`);
      rmSync(path, { force: true });
    }
  }
  const timer = setInterval(() => {
    try {
      const t = new Date();
      utimesSync(path, t, t);
    } catch {
      // the folder went away: nothing to keep fresh
    }
  }, TOUCH_MS);
  timer.unref();
  return {
    release() {
      clearInterval(timer);
      rmSync(path, { force: true });
    },
  };
}
