/** Shared by the tests: run the real CLIs as processes, temporary folders, process checks. */
import assert from 'node:assert/strict';
import { type ChildProcess, type SpawnOptions, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const COORDINATOR = fileURLToPath(new URL('../src/cli/coordinator.js', import.meta.url));
export const WORKER = fileURLToPath(new URL('../src/cli/worker.js', import.meta.url));

export function tempDir(prefix = 'mnist-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (with a hard timeout) and captures its output. */
export function runCommand(command: string, args: string[], opts: SpawnOptions & { timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${command} ${args.join(' ')} timed out\n${stdout}\n${stderr}`));
    }, opts.timeoutMs ?? 240_000);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Runs a CLI (a script of this project, on this Node) to completion; see runCommand. */
export function runCli(script: string, args: string[], opts: SpawnOptions & { timeoutMs?: number } = {}): Promise<RunResult> {
  return runCommand(process.execPath, [script, ...args], opts);
}

/** Starts a coordinator in the background, collecting its output. */
export function startCoordinator(args: string[]): { child: ChildProcess; out: () => string; err: () => string; exit: Promise<number | null> } {
  const child = spawn(process.execPath, [COORDINATOR, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d));
  child.stderr?.on('data', (d: Buffer) => (stderr += d));
  const exit = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  return { child, out: () => stdout, err: () => stderr, exit };
}

/** Starts a worker in the background (`script`: another build's worker.js), collecting its output. */
export function startWorker(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; script?: string } = {},
): { child: ChildProcess; log: () => string; exit: Promise<number | null> } {
  const child = spawn(process.execPath, [opts.script ?? WORKER, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
  let log = '';
  child.stdout?.on('data', (d: Buffer) => (log += d));
  child.stderr?.on('data', (d: Buffer) => (log += d));
  const exit = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  return { child, log: () => log, exit };
}

export function readJson<T = Record<string, unknown>>(path: string): T {
  return JSON.parse(readFileSync(path, 'utf8')) as T;
}

/**
 * Every process this test file starts inherits this tag in its environment, so that the process
 * checks below see this file's workers only, not those of other runs on the machine.
 */
const TAG = `MNIST_TEST_TAG=${process.pid}-${Date.now()}`;
process.env.MNIST_TEST_TAG = TAG.slice('MNIST_TEST_TAG='.length);

/** PIDs of live worker processes started (directly or not) by this test file. */
export function workerPids(): number[] {
  let out = '';
  try {
    out = execFileSync('pgrep', ['-f', WORKER], { encoding: 'utf8' });
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
  return out
    .split('\n')
    .filter(Boolean)
    .map(Number)
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(TAG);
      } catch {
        return false; // gone meanwhile
      }
    });
}

/** Waits until `cond` holds, polling; false when it did not within `timeoutMs`. */
export async function waitFor(cond: () => boolean, timeoutMs: number, everyMs = 50): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  return cond();
}

/** Deterministic uniform(lo, hi) test data from a seed (mulberry32; independent of the project's own generator). */
export function rand(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = lo + (((t ^ (t >>> 14)) >>> 0) / 4294967296) * (hi - lo);
  }
  return out;
}

/**
 * Starts the webgpu engine in this test process (a software adapter such as Mesa's lavapipe is
 * accepted). Where it cannot start, a test that needs it fails in CI (CI=true), where .ci/run
 * installs Vulkan, and elsewhere skips with one line saying why.
 */
export async function startWebGpuOrSkip(t: { skip(message?: string): void }): Promise<boolean> {
  const { initEngine } = await import('../src/engine/backend.js');
  try {
    await initEngine({ noCuda: false, engine: 'webgpu' });
    return true;
  } catch (e) {
    const why = `webgpu engine unavailable: ${(e as Error).message}`;
    if (process.env.CI === 'true') throw new Error(`${why} (CI installs Vulkan and Mesa's lavapipe; see .ci/run)`);
    t.skip(`${why}; install a Vulkan driver (Debian: mesa-vulkan-drivers from bookworm-backports) to run this test`);
    return false;
  }
}

/** A TCP port on 127.0.0.1 that was free a moment ago (for --listen in tests). */
export { freeLoopbackPort as freePort } from '../bench/free-port.js';

/** max |a − b| over the largest |b|: the error relative to the reference's own scale. */
export function relativeError(a: Float32Array, b: Float32Array): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / scale;
}

let identity: Promise<{ build: string; engine: string; models: Record<string, string> }> | undefined;

/**
 * What a worker of this build on this machine says of itself in its hello (build, engine, model
 * digests), for tests that speak to a coordinator as a worker: a coordinator refuses a hello without
 * them, and a deterministic one a hello of another engine. `engine`: the worker's flags (default:
 * none, --engine auto); it starts that engine in this process, whose first engine is its only one.
 */
export function workerIdentity(engine: { noCuda: boolean; engine?: 'auto' | 'wasm' } = { noCuda: false }): Promise<{ build: string; engine: string; models: Record<string, string> }> {
  identity ??= (async () => {
    const { engineIdentity, initEngine } = await import('../src/engine/backend.js');
    const { modelDigests } = await import('../src/models/index.js');
    const { buildId } = await import('../src/util/build.js');
    return { build: buildId(), engine: engineIdentity(await initEngine(engine)), models: modelDigests() };
  })();
  return identity;
}

/**
 * An undisturbed single-process run (`--workers 0`) with `flags`, into DIR/reference: its summary.json,
 * what a run under test with the same flags must end with (the weights, the steps).
 */
export async function referenceRun(flags: string[], dir: string): Promise<Record<string, unknown>> {
  const r = await runCli(COORDINATOR, [...flags, '--workers', '0', '--out', join(dir, 'reference')]);
  assert.equal(r.code, 0, r.stderr);
  return readJson(join(dir, 'reference', 'summary.json'));
}
