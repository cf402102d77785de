/**
 * The local worker processes: spawns them (pinned to a GPU where there are GPUs), starts a
 * replacement for one that was lost, stops them all at the end, and reports each exit it was not
 * told about. It knows nothing of the pool: the hub decides whom to replace.
 *
 * Each child gets a random secret in its environment (never on its command line, which every
 * user of the machine can read); its hello carries it back. `identify` is how the hub tells its
 * own children from any other hello: a pid proves nothing, anyone can claim one.
 */
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type { EngineChoice } from '../engine/backend.js';
import { WORKER_SECRET_ENV } from '../protocol/messages.js';

const WORKER_SCRIPT = fileURLToPath(new URL('../cli/worker.js', import.meta.url));

/** The part of a ChildProcess the launcher uses (a test gives it a fake). */
export type WorkerProcess = Pick<ChildProcess, 'pid' | 'exitCode' | 'signalCode' | 'kill' | 'on' | 'once' | 'stdout'>;
export type SpawnFn = (command: string, args: string[], options: SpawnOptions) => WorkerProcess;

export interface LauncherOptions {
  /** Where the workers connect. */
  endpoint: string;
  /** Workers the run asks for: the restart budget is 3 per worker, plus 3. */
  workers: number;
  /** GPUs to pin workers to, round-robin (0 = none). */
  gpus: number;
  noCuda: boolean;
  engine?: EngineChoice;
  keysDir?: string;
  /** Extra arguments for every worker. */
  workerArgs?: string[];
  /** A worker's exit that nobody asked for: `how` reads "exited with status 1" or "killed by SIGKILL". */
  onExit: (local: number, pid: number | undefined, how: string) => void;
  /** A line a worker wrote on its stdout. */
  onOutput?: (pid: number | undefined, line: string) => void;
  /** Starts a process (child_process.spawn). */
  spawn?: SpawnFn;
}

/** What `replace` did. */
export type Replacement = { kind: 'started'; local: number; restarts: number } | { kind: 'refused'; reason: string } | { kind: 'closing' };

interface Child {
  local: number;
  process: WorkerProcess;
  /** Which worker of the run it is: its GPU follows from this. */
  index: number;
  secret: Buffer;
  /** Declared lost and replaced: its exit must not be reported (it would count twice). */
  retired: boolean;
  exited: boolean;
}

export class Launcher {
  private readonly children = new Map<number, Child>();
  private nextLocal = 0;
  private restarts = 0;
  private closing = false;
  private readonly spawnFn: SpawnFn;

  constructor(private readonly opts: LauncherOptions) {
    this.spawnFn = opts.spawn ?? spawn;
  }

  /** The worker's command-line arguments after the script (no secret among them). */
  argsFor(index: number): string[] {
    const args = ['--connect', this.opts.endpoint.replace('0.0.0.0', '127.0.0.1')];
    if (this.opts.noCuda) args.push('--no-cuda');
    if (this.opts.engine && this.opts.engine !== 'auto') args.push('--engine', this.opts.engine);
    else if (this.opts.gpus > 0) args.push('--gpu', String(index % this.opts.gpus));
    if (this.opts.keysDir) args.push('--keys', this.opts.keysDir);
    args.push(...(this.opts.workerArgs ?? []));
    return args;
  }

  /** Starts worker `index` of the run; returns its local id. */
  start(index: number): number {
    const secret = randomBytes(24);
    // Its own process group: a Ctrl-C at the terminal reaches the coordinator alone, which then
    // finishes the step, checkpoints and stops the workers itself.
    const proc = this.spawnFn(process.execPath, [WORKER_SCRIPT, ...this.argsFor(index)], {
      stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
      detached: true,
      env: { ...process.env, [WORKER_SECRET_ENV]: secret.toString('hex') },
    });
    const child: Child = { local: this.nextLocal++, process: proc, index, secret, retired: false, exited: false };
    this.children.set(child.local, child);
    proc.stdout?.setEncoding('utf8').on('data', (text: string) => {
      for (const line of text.split('\n')) if (line.trim()) this.opts.onOutput?.(proc.pid, line);
    });
    proc.on('exit', (code: number | null, signal: NodeJS.Signals | null) => {
      // The record stays until the child is replaced: its replacement takes its place (and GPU).
      child.exited = true;
      if (child.retired) this.children.delete(child.local);
      if (this.closing || child.retired) return;
      this.opts.onExit(child.local, proc.pid, signal ? `killed by ${signal}` : `exited with status ${code}`);
    });
    return child.local;
  }

  /** The running child whose secret this is (hex, as its hello carries it), if any. */
  identify(secret: string | undefined): number | undefined {
    if (typeof secret !== 'string' || !/^[0-9a-f]{48}$/.test(secret)) return undefined;
    const given = Buffer.from(secret, 'hex');
    for (const c of this.children.values()) if (!c.exited && timingSafeEqual(c.secret, given)) return c.local;
    return undefined;
  }

  pid(local: number): number | undefined {
    return this.children.get(local)?.process.pid;
  }

  /** Children that have not exited yet. */
  private live(): Child[] {
    return [...this.children.values()].filter((c) => !c.exited);
  }

  /** How many children have not exited yet. */
  get running(): number {
    return this.live().length;
  }

  /**
   * `local` is lost: kills it if it still runs (its exit then goes unreported) and starts a worker
   * in its place, unless the run is closing or the restart budget is spent.
   */
  replace(local: number): Replacement {
    const child = this.children.get(local);
    if (child && isRunning(child.process)) {
      child.process.kill('SIGKILL');
      if (!this.closing) child.retired = true;
    }
    if (this.closing) return { kind: 'closing' };
    if (child?.exited) this.children.delete(local);
    const index = child?.index ?? 0;
    if (this.restarts >= 3 * this.opts.workers + 3) return { kind: 'refused', reason: 'too many worker restarts; not starting another' };
    this.restarts++;
    return { kind: 'started', local: this.start(index), restarts: this.restarts };
  }

  /** From now on exits are expected: none is reported, none is replaced. */
  beginClose(): void {
    this.closing = true;
  }

  /** Waits up to `graceMs` for the children to exit, then kills the rest and waits for them. */
  async stop(graceMs: number): Promise<void> {
    this.closing = true;
    const procs = this.live().map((c) => c.process);
    const exits = procs.map((p) => new Promise<void>((r) => (!isRunning(p) ? r() : p.once('exit', () => r()))));
    const grace = new Promise<void>((r) => setTimeout(r, graceMs).unref());
    await Promise.race([Promise.all(exits), grace]);
    for (const c of this.live()) c.process.kill('SIGKILL');
    await Promise.all(exits);
  }

  /** For process.on('exit'): no child outlives the coordinator. */
  readonly killAllNow = (): void => {
    for (const c of this.live()) c.process.kill('SIGKILL');
  };
}

function isRunning(p: WorkerProcess): boolean {
  return p.exitCode === null && p.signalCode === null;
}
