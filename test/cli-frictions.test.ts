/**
 * What a new user runs into, each reproduced with the real CLI: run folders that cannot collide,
 * a folder in use by a live run refused, an unusable --out as one line, --resume that keeps the
 * run's settings and says when a run is finished, keys outside the tree, the model-use example,
 * a worker stopped with SIGINT.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { LOCK_FILE, STALE_MS, lockRunFolder } from '../src/coordinator/run-lock.js';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { COORDINATOR, WORKER, readJson, runCli, tempDir, waitFor } from './helpers.js';

const TINY = ['--epochs', '1', '--train-limit', '128', '--test-limit', '100'];

test('two runs started at once with the default --out land in two folders', async () => {
  const cwd = tempDir();
  const [a, b] = await Promise.all([runCli(COORDINATOR, [...TINY, '--workers', '0'], { cwd }), runCli(COORDINATOR, [...TINY, '--workers', '0'], { cwd })]);
  assert.equal(a.code, 0, a.stderr);
  assert.equal(b.code, 0, b.stderr);
  const runs = readdirSync(join(cwd, 'runs'));
  assert.equal(runs.length, 2, runs.join(', '));
  for (const run of runs) {
    assert.ok(existsSync(join(cwd, 'runs', run, 'summary.json')), run);
    // Each log holds one process's lines.
    const pids = new Set(readFileSync(join(cwd, 'runs', run, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { pid: number }).pid));
    assert.equal(pids.size, 1, `${run}: ${[...pids].join(', ')}`);
  }
});

test('a folder in use by a live run is refused; a lock left by a killed run is taken over at once', async () => {
  const out = join(tempDir(), 'run');
  const first = spawn(process.execPath, [COORDINATOR, '--workers', '0', '--epochs', '1', '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  first.stdout.on('data', (d: Buffer) => (stdout += d));
  assert.ok(await waitFor(() => /Train Epoch/.test(stdout), 60_000), stdout);
  const second = await runCli(COORDINATOR, [...TINY, '--workers', '0', '--out', out]);
  assert.equal(second.code, 1);
  assert.match(second.stderr.trim(), /^coordinator: error: --out .* is in use by a live run \(pid \d+ on .*\); choose another --out, or wait for it to end$/);
  first.kill('SIGKILL');
  await new Promise((r) => first.on('exit', r));
  assert.ok(existsSync(join(out, 'run.lock')), 'the killed run left its lock');
  // Its process is gone: on the same host the lock is stale at once.
  // It died before its first checkpoint: a new run may use the folder.
  const resumed = await runCli(COORDINATOR, [...TINY, '--workers', '0', '--out', out]);
  assert.doesNotMatch(resumed.stderr, /in use by a live run/);
  assert.equal(resumed.code, 0, resumed.stderr);
});

test('an --out that cannot be made is one line, at once', async () => {
  const started = Date.now();
  const r = await runCli(COORDINATOR, [...TINY, '--workers', '0', '--out', '/proc/foo'], { timeoutMs: 20_000 });
  assert.equal(r.code, 1);
  assert.equal(r.stderr.trim(), 'coordinator: error: --out /proc/foo: cannot write there (ENOENT)');
  assert.ok(Date.now() - started < 10_000);
});

test('--resume keeps the run\'s worker count, and a finished run is left as it is', async () => {
  const out = join(tempDir(), 'run');
  const first = await runCli(COORDINATOR, [...TINY, '--workers', '1', '--out', out]);
  assert.equal(first.code, 0, first.stderr);
  const summaryBefore = statSync(join(out, 'summary.json')).mtimeMs;
  const again = await runCli(COORDINATOR, ['--resume', '--out', out]);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /is already finished: 1 epochs, test accuracy [\d.]+%; nothing to do/);
  assert.equal(statSync(join(out, 'summary.json')).mtimeMs, summaryBefore, 'summary.json untouched');
  // Asked for more epochs, it trains on, with the run's one worker (not one per core).
  const more = await runCli(COORDINATOR, ['--resume', '--epochs', '2', '--out', out]);
  assert.equal(more.code, 0, more.stderr);
  const summary = readJson(join(out, 'summary.json'));
  assert.equal(summary.epochs, 2);
  assert.equal(summary.workers, 1);
});

test('keygen writes outside the working tree by default', () => {
  const config = tempDir('xdg-config-');
  const cwd = tempDir();
  const r = spawnSync(process.execPath, [COORDINATOR, 'keygen'], { cwd, env: { ...process.env, XDG_CONFIG_HOME: config }, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(existsSync(join(config, 'mnist-ddp', 'keys', 'coordinator.key_secret')) || readdirSync(join(config, 'mnist-ddp', 'keys')).length === 4);
  assert.deepEqual(readdirSync(cwd), [], 'nothing written where it ran');
  assert.match(r.stdout, /--keys .*mnist-ddp\/keys/);
  const gitignore = readFileSync(fileURLToPath(new URL('../../.gitignore', import.meta.url)), 'utf8');
  assert.match(gitignore, /^keys\/$/m);
});

test("the README's model-use example runs as written on a finished run", async () => {
  const out = join(tempDir(), 'run');
  const r = await runCli(COORDINATOR, [...TINY, '--workers', '0', '--out', out]);
  assert.equal(r.code, 0, r.stderr);
  const example = fileURLToPath(new URL('../../examples/use-model.mjs', import.meta.url));
  const use = spawnSync(process.execPath, [example, join(out, 'model', 'model.json')], { encoding: 'utf8', cwd: fileURLToPath(new URL('../..', import.meta.url)) });
  assert.equal(use.status, 0, use.stderr);
  const lines = use.stdout.split('\n').filter((l) => l.startsWith('image '));
  assert.equal(lines.length, 8);
  for (const line of lines) assert.match(line, /^image \d: predicted \d, label \d$/);
});

test('a worker stopped with SIGINT exits 130, with SIGTERM 143', async () => {
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    const worker = spawn(process.execPath, [WORKER, '--connect', 'tcp://127.0.0.1:9', '--connect-timeout', '30'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    worker.stdout.on('data', (d: Buffer) => (log += d));
    assert.ok(await waitFor(() => /connecting to/.test(log), 20_000), log);
    worker.kill(signal);
    const exit = await new Promise<number | null>((r) => worker.on('exit', (c) => r(c)));
    assert.equal(exit, code, `${signal}: ${log}`);
  }
});

test('a lock held from another host counts while it is touched, and goes stale 10 s after', () => {
  const dir = tempDir();
  const lockPath = join(dir, LOCK_FILE);
  writeFileSync(lockPath, JSON.stringify({ pid: 1, host: 'another-pod' }));
  assert.throws(() => lockRunFolder(dir), /is in use by a live run \(pid 1 on another-pod\)/);
  const old = new Date(Date.now() - STALE_MS - 1000);
  utimesSync(lockPath, old, old);
  const lock = lockRunFolder(dir);
  assert.match(readFileSync(lockPath, 'utf8'), new RegExp(`"pid":${process.pid}`));
  lock.release();
  assert.ok(!existsSync(lockPath));
});
