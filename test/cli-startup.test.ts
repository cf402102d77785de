/**
 * The CLIs answer --help and one-line errors before anything heavy loads: tfjs, the engines
 * (WebGPU, the canvas), ZeroMQ, msgpackr and pino are imported only once the command line has been
 * checked. Checked by the modules each command loads (test/load-trace.ts), not by a timer.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { COORDINATOR, WORKER, type RunResult, runCommand, tempDir } from './helpers.js';

const LOAD_TRACE = fileURLToPath(new URL('./load-trace.js', import.meta.url));
/** tfjs, ZeroMQ, Dawn and the canvas: what made a usage error take over a second. */
const ENGINES = /\/node_modules\/(@tensorflow\/|zeromq\/|webgpu\/|@napi-rs\/)/;
/** What --help needs none of either. */
const HEAVY = new RegExp(`${ENGINES.source}|/node_modules/(msgpackr|pino|pngjs|jpeg-js)/`);

/** Runs a script of this project, recording every module it loads. */
async function traced(script: string, args: string[]): Promise<RunResult & { loaded: string[] }> {
  const file = join(tempDir('mnist-load-trace-'), 'loaded.txt');
  const r = await runCommand(process.execPath, ['--import', LOAD_TRACE, script, ...args], { env: { ...process.env, MNIST_LOAD_TRACE: file }, timeoutMs: 60_000 });
  const loaded = readFileSync(file, 'utf8').trim().split('\n');
  return { ...r, loaded };
}

function loadedOf(loaded: string[], packages: RegExp): string[] {
  return loaded.filter((url) => packages.test(url));
}

function assertOneLine(stderr: string, expected: RegExp): void {
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line, got:\n${stderr}`);
  assert.match(lines[0], expected);
}

test('the trace sees what a module loads: the engine module loads tfjs', async () => {
  const r = await traced(fileURLToPath(new URL('../src/engine/backend.js', import.meta.url)), []);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.loaded.some((url) => url.includes('/node_modules/@tensorflow/tfjs-core/')), r.loaded.join('\n'));
  assert.ok(loadedOf(r.loaded, ENGINES).length > 0 && loadedOf(r.loaded, HEAVY).length > 0);
});

test('--help of coordinator, its subcommands and worker: commander only, no engine', async () => {
  for (const [script, args, expected] of [
    [COORDINATOR, ['--help'], /Usage: coordinator/],
    [COORDINATOR, ['sweep', '--help'], /Usage: coordinator sweep/],
    [COORDINATOR, ['evaluate', '--help'], /Usage: coordinator evaluate/],
    [WORKER, ['--help'], /Usage: worker/],
  ] as const) {
    const r = await traced(script, [...args]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, expected);
    assert.ok(r.loaded.some((url) => url.includes('/node_modules/commander/')), 'the trace recorded the packages loaded');
    assert.deepEqual(loadedOf(r.loaded, HEAVY), [], `${args.join(' ')}`);
  }
});

test('usage errors come before any engine loads: one line, exit 2', async () => {
  for (const [script, args, expected] of [
    [COORDINATOR, ['--bad-flag'], /^coordinator: error: unknown option '--bad-flag'$/],
    [COORDINATOR, ['--epochs', 'x'], /^coordinator: error: .*--epochs/],
    [COORDINATOR, ['--listen', 'tcp://0.0.0.0:5555', '--workers', '1', '--out', tempDir()], /^coordinator: error: --listen tcp:\/\/0\.0\.0\.0:5555 reaches beyond this machine/],
    [COORDINATOR, ['--metrics', 'nowhere', '--out', tempDir()], /^coordinator: error: --metrics nowhere: expected HOST:PORT/],
    [COORDINATOR, ['--metrics', '0.0.0.0:9400', '--out', tempDir()], /^coordinator: error: --metrics 0\.0\.0\.0:9400 reaches beyond this machine/],
    [COORDINATOR, ['--workers', '2', '--min-workers', '3', '--out', tempDir()], /^coordinator: error: --min-workers 3: must be from 1 to --workers \(2\)$/],
    [WORKER, ['--connect', 'somewhere'], /^worker: error: --connect somewhere: expected an address/],
    [WORKER, [], /^worker: error: required option '--connect <addr>' not specified$/],
  ] as const) {
    const r = await traced(script, [...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assertOneLine(r.stderr, expected);
    assert.deepEqual(loadedOf(r.loaded, ENGINES), [], `${args.join(' ')}`);
  }
});

test('--out /proc/foo (of a run and of a sweep), and --resume without a checkpoint: one line, exit 1, before tfjs loads', async () => {
  const out = await traced(COORDINATOR, ['--out', '/proc/foo', '--epochs', '1']);
  assert.equal(out.code, 1, out.stderr);
  assertOneLine(out.stderr, /^coordinator: error: --out \/proc\/foo: cannot write there \(ENOENT\)$/);
  const sweep = await traced(COORDINATOR, ['sweep', '--out', '/proc/foo', '--lr', '0.01,0.1']);
  assert.equal(sweep.code, 1, sweep.stderr);
  assertOneLine(sweep.stderr, /^coordinator: error: --out \/proc\/foo: cannot write there \(ENOENT\)$/);
  const empty = tempDir();
  const resume = await traced(COORDINATOR, ['--out', empty, '--resume']);
  assert.equal(resume.code, 1, resume.stderr);
  assertOneLine(resume.stderr, /^coordinator: error: --resume: no checkpoint in /);
  for (const r of [out, sweep, resume]) {
    assert.deepEqual(loadedOf(r.loaded, ENGINES), []);
  }
});
