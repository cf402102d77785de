/**
 * --min-workers: a run starts with M of its N workers and admits the rest as they come; below M,
 * steps wait for members to come back, within --empty-pool-timeout. Deterministic weights do not
 * depend on who joined when.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { COORDINATOR, freePort, readJson, runCli, startCoordinator, startWorker, tempDir, waitFor, workerPids } from './helpers.js';

const RUN = ['--epochs', '1', '--train-limit', '1280', '--test-limit', '200', '--deterministic', '--log-interval', '1'];

after(async () => {
  assert.ok(await waitFor(() => workerPids().length === 0, 10_000), `workers left behind: ${workerPids().join(', ')}`);
});

let referenceDigest: Promise<string> | undefined;

/** weights_sha256 of the same run with --workers 1 (computed once for the file). */
function reference(): Promise<string> {
  referenceDigest ??= (async () => {
    const out = join(tempDir(), 'reference');
    const r = await runCli(COORDINATOR, [...RUN, '--workers', '1', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    return readJson(join(out, 'summary.json')).weights_sha256 as string;
  })();
  return referenceDigest;
}

/** The messages of a run's log.jsonl, in order. */
function logMessages(out: string): string[] {
  return readFileSync(join(out, 'log.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => (JSON.parse(line) as { msg: string }).msg);
}

test('--min-workers 1 of 3: the run starts with the first worker, the other two join late, and the weights are those of --workers 1', async () => {
  const listen = `tcp://127.0.0.1:${await freePort()}`;
  const out = join(tempDir(), 'run');
  // A long --worker-timeout: the first worker is frozen below while the others start.
  const run = startCoordinator([...RUN, '--workers', '3', '--min-workers', '1', '--no-spawn', '--listen', listen, '--worker-timeout', '60', '--out', out]);
  const log = (): string => run.out() + run.err();
  const first = startWorker(['--connect', listen]);
  assert.ok(await waitFor(() => /starting with 1 of 3 workers \(--min-workers 1\)/.test(log()), 60_000), log());
  // Frozen, the first worker holds its shards: the run cannot end before the late workers join.
  first.child.kill('SIGSTOP');
  const late = [startWorker(['--connect', listen]), startWorker(['--connect', listen])];
  const joinedLate = await waitFor(() => (log().match(/joined late/g) ?? []).length === 2, 60_000);
  first.child.kill('SIGCONT');
  assert.ok(joinedLate, log());

  assert.equal(await run.exit, 0, log());
  const summary = readJson(join(out, 'summary.json'));
  assert.equal(summary.workers, 3);
  assert.equal(summary.min_workers, 1);
  assert.equal(summary.worker_failures, 0);
  assert.equal((summary.devices as { workers: unknown[] }).workers.length, 3, 'all three took part');
  assert.equal(summary.weights_sha256, await reference());
  for (const w of [first, ...late]) assert.equal(await w.exit, 0, w.log());
});

test('below --min-workers steps wait; a worker that joins lets them go on, with the undisturbed weights', async () => {
  const listen = `tcp://127.0.0.1:${await freePort()}`;
  const out = join(tempDir(), 'run');
  const run = startCoordinator([...RUN, '--workers', '2', '--min-workers', '2', '--no-spawn', '--listen', listen, '--worker-timeout', '2', '--empty-pool-timeout', '120', '--out', out]);
  const log = (): string => run.out() + run.err();
  const workers = [startWorker(['--connect', listen]), startWorker(['--connect', listen])];
  assert.ok(await waitFor(() => /Train Epoch: 1 \[128\//.test(log()), 60_000), log());
  workers[1].child.kill('SIGKILL');
  assert.ok(await waitFor(() => /1 of 2 workers in the pool, fewer than --min-workers 2: steps wait up to 120 s/.test(log()), 30_000), log());
  // Paused: no step goes out until a second worker is back (the one in flight may finish).
  const paused = (log().match(/Train Epoch/g) ?? []).length;
  await new Promise((r) => setTimeout(r, 3000));
  assert.ok((log().match(/Train Epoch/g) ?? []).length <= paused + 1, log());
  const replacement = startWorker(['--connect', listen]);

  assert.equal(await run.exit, 0, log());
  const messages = logMessages(out);
  const from = messages.findIndex((m) => /fewer than --min-workers 2/.test(m));
  const to = messages.findIndex((m) => /2 workers in the pool again: training goes on/.test(m));
  assert.ok(from >= 0 && to > from, messages.join('\n'));
  assert.ok(messages.slice(from, to).filter((m) => m.startsWith('Train Epoch')).length <= 1, 'at most the step in flight ends during the pause');
  const summary = readJson(join(out, 'summary.json'));
  assert.equal(summary.min_workers, 2);
  assert.equal(summary.worker_failures, 1);
  assert.equal(summary.weights_sha256, await reference());
  assert.equal(await workers[0].exit, 0);
  assert.equal(await replacement.exit, 0, replacement.log());
});

test('fewer than --min-workers past --empty-pool-timeout: checkpoint, one line, exit 1; resumed with spawned workers, the undisturbed weights', async () => {
  const listen = `tcp://127.0.0.1:${await freePort()}`;
  const out = join(tempDir(), 'run');
  const run = startCoordinator([...RUN, '--workers', '2', '--min-workers', '2', '--no-spawn', '--listen', listen, '--worker-timeout', '2', '--empty-pool-timeout', '2', '--out', out]);
  const log = (): string => run.out() + run.err();
  const workers = [startWorker(['--connect', listen]), startWorker(['--connect', listen])];
  assert.ok(await waitFor(() => /Train Epoch: 1 \[128\//.test(log()), 60_000), log());
  workers[1].child.kill('SIGKILL');
  assert.equal(await run.exit, 1, log());
  assert.match(run.err(), /^coordinator: error: only 1 of the --min-workers 2 workers in the pool, and no more joined within 2 s$/m);
  assert.doesNotMatch(run.err(), /\n\s+at /, 'no stack trace');

  // The worker left waiting for its coordinator to come back on that address is not needed.
  workers[0].child.kill('SIGTERM');
  const resumed = await runCli(COORDINATOR, ['--resume', '--workers', '2', '--min-workers', '1', '--out', out], { timeoutMs: 120_000 });
  assert.equal(resumed.code, 0, resumed.stdout + resumed.stderr);
  const summary = readJson(join(out, 'summary.json'));
  assert.equal(summary.min_workers, 1);
  assert.equal(summary.weights_sha256, await reference());
  assert.equal(await workers[0].exit, 143, workers[0].log());
});

test('--min-workers outside 1..--workers is one line and exit 2, before anything is written', async () => {
  const dir = tempDir();
  for (const [args, message] of [
    [['--workers', '3', '--min-workers', '4'], /^coordinator: error: --min-workers 4: must be from 1 to --workers \(3\)$/m],
    [['--workers', '0', '--min-workers', '1'], /^coordinator: error: --min-workers needs --workers N with N ≥ 1/m],
  ] as const) {
    const out = join(dir, args.join(''));
    const r = await runCli(COORDINATOR, [...RUN, ...args, '--out', out]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, message);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.ok(!existsSync(out), 'nothing written');
  }
});
