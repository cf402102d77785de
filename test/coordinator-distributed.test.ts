/**
 * Distributed training with real worker processes and real ZeroMQ sockets on loopback.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { COORDINATOR, WORKER, readJson, runCli, startCoordinator, tempDir, waitFor, workerPids } from './helpers.js';

const SUBSET = ['--epochs', '1', '--train-limit', '768', '--test-limit', '200', '--deterministic'];

after(async () => {
  assert.ok(await waitFor(() => workerPids().length === 0, 5000), `workers left behind: ${workerPids().join(', ')}`);
});

async function train(out: string, workers: number, extra: string[] = []): Promise<Record<string, unknown>> {
  const r = await runCli(COORDINATOR, [...SUBSET, ...extra, '--workers', String(workers), '--out', out]);
  assert.equal(r.code, 0, `--workers ${workers}: ${r.stderr}`);
  assert.ok(await waitFor(() => workerPids().length === 0, 5000), 'no worker outlives its coordinator');
  return readJson(join(out, 'summary.json'));
}

test('deterministic mode: the same weights with 0, 1 and 3 workers', async () => {
  const dir = tempDir();
  const s0 = await train(join(dir, 'w0'), 0);
  const s1 = await train(join(dir, 'w1'), 1);
  const s3 = await train(join(dir, 'w3'), 3);
  assert.equal(s1.weights_sha256, s0.weights_sha256);
  assert.equal(s3.weights_sha256, s0.weights_sha256);
  assert.equal(s3.workers, 3);
  assert.equal(s3.worker_failures, 0);
  assert.equal(s3.test_accuracy, s0.test_accuracy);
  const stats = s3.distributed as Record<string, number>;
  assert.ok(stats.bytes_sent_per_step > 87_000, 'new weights (87 KB) go out every step');
});

test('deterministic mode holds with augmentation, a momentum schedule and another model', async () => {
  const dir = tempDir();
  const extra = ['--model', 'lenet', '--augment', '--momentum-final', '0.9', '--lr-schedule', 'cosine', '--train-limit', '512'];
  const s0 = await train(join(dir, 'a0'), 0, extra);
  const s2 = await train(join(dir, 'a2'), 2, extra);
  assert.equal(s2.weights_sha256, s0.weights_sha256);
  assert.deepEqual(s2.momentum, { start: 0.5, final: 0.9, ramp_steps: 8 });
  const plain = await train(join(dir, 'plain'), 0, ['--model', 'lenet', '--train-limit', '512']);
  assert.notEqual(plain.weights_sha256, s0.weights_sha256, 'augmentation and the schedules change the result');
});

test('fast mode (one slice per worker) trains to single-node accuracy', async () => {
  const dir = tempDir();
  const args = ['--epochs', '1', '--train-limit', '3200', '--test-limit', '1000', '--lr', '0.05', '--momentum', '0.9'];
  const run = async (workers: number): Promise<Record<string, unknown>> => {
    const r = await runCli(COORDINATOR, [...args, '--workers', String(workers), '--out', join(dir, `fast${workers}`)]);
    assert.equal(r.code, 0, r.stderr);
    return readJson(join(dir, `fast${workers}`, 'summary.json'));
  };
  const single = await run(0);
  const two = await run(2);
  assert.equal(two.deterministic, false);
  assert.ok((single.test_accuracy as number) > 0.7, `single-node ${single.test_accuracy}`);
  // Rounding differs (the batch is summed in two halves), so the runs part ways; within noise.
  assert.ok(Math.abs((two.test_accuracy as number) - (single.test_accuracy as number)) < 0.06, `${two.test_accuracy} vs ${single.test_accuracy}`);
});

for (const [fault, signal] of [['killed with SIGKILL', 'SIGKILL'], ['that stops answering (SIGSTOP)', 'SIGSTOP']] as const) {
  test(`a worker ${fault} mid-run: the run completes with unchanged weights`, async () => {
    const dir = tempDir();
    const extra = ['--train-limit', '1920', '--log-interval', '1', '--worker-timeout', '2'];
    const reference = await train(join(dir, 'reference'), 0, extra);
    const run = startCoordinator([...SUBSET, ...extra, '--workers', '2', '--out', join(dir, 'faulty')]);
    assert.ok(await waitFor(() => /Train Epoch: 1 \[320\//.test(run.out()), 60_000), `training did not start:\n${run.out()}\n${run.err()}`);
    const victims = workerPids();
    assert.equal(victims.length, 2);
    process.kill(victims[0], signal);
    const code = await run.exit;
    assert.equal(code, 0, run.err());
    assert.match(run.err(), signal === 'SIGKILL' ? /lost worker .*killed by SIGKILL/ : /lost worker .*silent for/);
    const summary = readJson(join(dir, 'faulty', 'summary.json'));
    assert.equal(summary.worker_failures, 1, 'one worker lost, counted once');
    assert.equal(summary.weights_sha256, reference.weights_sha256);
    assert.equal(summary.steps, reference.steps);
    assert.ok(await waitFor(() => workerPids().length === 0, 5000), 'the stopped worker was killed, not left behind');
  });
}

test('--no-spawn: two workers started separately join and the run completes', async () => {
  const dir = tempDir();
  const port = 20000 + (process.pid % 20000);
  const addr = `tcp://127.0.0.1:${port}`;
  const run = startCoordinator([...SUBSET, '--workers', '2', '--no-spawn', '--listen', addr, '--out', join(dir, 'nospawn')]);
  assert.ok(await waitFor(() => /waiting for 2 workers/.test(run.out()), 30_000), run.err());
  const workers = [0, 1].map(() => runCli(WORKER, ['--connect', addr]));
  const code = await run.exit;
  assert.equal(code, 0, run.err());
  for (const w of await Promise.all(workers)) assert.equal(w.code, 0, w.stderr);
  const summary = readJson(join(dir, 'nospawn', 'summary.json'));
  assert.equal(summary.workers, 2);
  assert.match(run.out(), /Test set: Average loss/);
});

test('--no-spawn: too few workers within the timeout is a clear error, and a worker with no coordinator gives up', async () => {
  const dir = tempDir();
  const port = 20001 + (process.pid % 20000);
  const r = await runCli(COORDINATOR, [...SUBSET, '--workers', '2', '--no-spawn', '--listen', `tcp://127.0.0.1:${port}`, '--connect-timeout', '1', '--out', join(dir, 'x')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^coordinator: error: only 0 of 2 workers joined tcp:\/\/127\.0\.0\.1:\d+ within 1 s$/m);
  const w = await runCli(WORKER, ['--connect', `tcp://127.0.0.1:${port}`, '--connect-timeout', '1']);
  assert.equal(w.code, 1);
  assert.match(w.stderr, /^worker: error: no answer from a coordinator at tcp:\/\/127\.0\.0\.1:\d+ within 1 s( \(if it runs with --keys, this worker needs them too\))?$/m);
});
