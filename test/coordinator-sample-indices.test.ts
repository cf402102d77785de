/**
 * Workers that read the run's training set themselves are sent sample indices instead of pixels
 * (real coordinator and worker processes, real sockets, real MNIST subsets).
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadMnist, trainDataIdentity, loadTrainSplit, type MnistSplit } from '../src/data/mnist.js';
import { COORDINATOR, WORKER, freePort, readJson, runCli, startCoordinator, tempDir, waitFor } from './helpers.js';

const SUBSET = ['--epochs', '1', '--train-limit', '512', '--test-limit', '100', '--deterministic'];

type Distributed = { bytes_sent_per_step: number };

/** Writes `split` as the two IDX files of one MNIST split (raw, as the files are distributed). */
function writeSplit(dir: string, images: string, labels: string, split: MnistSplit): void {
  const header = (magic: number, dims: number[]): Buffer => {
    const b = Buffer.alloc(4 + 4 * dims.length);
    b.writeUInt32BE(magic, 0);
    dims.forEach((d, i) => b.writeUInt32BE(d, 4 + 4 * i));
    return b;
  };
  writeFileSync(join(dir, images), Buffer.concat([header(0x803, [split.count, 28, 28]), split.images]));
  writeFileSync(join(dir, labels), Buffer.concat([header(0x801, [split.count]), split.labels]));
}

test('the identity of a training set is that of its files, whatever --train-limit keeps', () => {
  const whole = trainDataIdentity(loadTrainSplit());
  assert.equal(whole.count, 60000);
  assert.match(whole.digest, /^sha256:[0-9a-f]{64}$/);
  assert.deepEqual(trainDataIdentity(loadMnist({ trainLimit: 100, testLimit: 10 }).train), whole);
  const dir = tempDir();
  const part = loadMnist({ trainLimit: 1000, testLimit: 10 });
  writeSplit(dir, 'train-images-idx3-ubyte', 'train-labels-idx1-ubyte', part.train);
  const other = trainDataIdentity(loadTrainSplit(dir));
  assert.equal(other.count, 1000);
  assert.notEqual(other.digest, whole.digest);
});

test('workers holding the training set get sample indices, one with --data none gets pixels: the same weights', async () => {
  const dir = tempDir();
  const reference = await runCli(COORDINATOR, [...SUBSET, '--workers', '0', '--out', join(dir, 'w0')]);
  assert.equal(reference.code, 0, reference.stderr);
  const addr = `tcp://127.0.0.1:${await freePort()}`;
  const run = startCoordinator([...SUBSET, '--workers', '2', '--no-spawn', '--listen', addr, '--out', join(dir, 'mixed')]);
  assert.ok(await waitFor(() => /waiting for 2 workers/.test(run.out()), 30_000), run.err());
  const workers = [runCli(WORKER, ['--connect', addr]), runCli(WORKER, ['--connect', addr, '--data', 'none'])];
  assert.equal(await run.exit, 0, run.err());
  for (const w of await Promise.all(workers)) assert.equal(w.code, 0, w.stderr);
  assert.match(run.out(), /; holds the training set: sent sample indices\); /);
  assert.match(run.out(), /; sent pixels\); /);
  const mixed = readJson(join(dir, 'mixed', 'summary.json'));
  assert.equal(mixed.weights_sha256, readJson(join(dir, 'w0', 'summary.json')).weights_sha256);

  // Both spawned workers read the bundled set: only the weights and 8 bytes a sample go out.
  const spawned = await runCli(COORDINATOR, [...SUBSET, '--workers', '2', '--out', join(dir, 'spawned')]);
  assert.equal(spawned.code, 0, spawned.stderr);
  const s = readJson(join(dir, 'spawned', 'summary.json'));
  assert.equal(s.weights_sha256, mixed.weights_sha256);
  const sent = (s.distributed as Distributed).bytes_sent_per_step;
  const sentMixed = (mixed.distributed as Distributed).bytes_sent_per_step;
  // One worker of the mixed run was sent its half of each 64-sample batch as pixels (785 bytes a sample).
  assert.ok(sentMixed - sent > 32 * 700, `pixels to one worker: ${sentMixed} bytes a step, indices to both: ${sent}`);
});

test('a coordinator on other data (--data DIR): spawned workers read DIR too, a worker with the bundled set gets pixels', async () => {
  const dir = tempDir();
  const data = join(dir, 'mnist-part');
  mkdirSync(data);
  const part = loadMnist({ trainLimit: 600, testLimit: 100 });
  writeSplit(data, 'train-images-idx3-ubyte', 'train-labels-idx1-ubyte', part.train);
  writeSplit(data, 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte', part.test);
  const args = [...SUBSET, '--data', data];
  const reference = await runCli(COORDINATOR, [...args, '--workers', '0', '--out', join(dir, 'w0')]);
  assert.equal(reference.code, 0, reference.stderr);
  const spawned = await runCli(COORDINATOR, [...args, '--workers', '2', '--out', join(dir, 'spawned')]);
  assert.equal(spawned.code, 0, spawned.stderr);
  assert.equal((spawned.stdout.match(/holds the training set: sent sample indices/g) ?? []).length, 2, spawned.stdout);
  const w0 = readJson(join(dir, 'w0', 'summary.json'));
  assert.equal(readJson(join(dir, 'spawned', 'summary.json')).weights_sha256, w0.weights_sha256);

  const addr = `tcp://127.0.0.1:${await freePort()}`;
  const run = startCoordinator([...args, '--workers', '1', '--no-spawn', '--listen', addr, '--out', join(dir, 'bundled')]);
  assert.ok(await waitFor(() => /waiting for 1 workers?/.test(run.out()), 30_000), run.err());
  const worker = runCli(WORKER, ['--connect', addr]);
  assert.equal(await run.exit, 0, run.err());
  assert.equal((await worker).code, 0);
  assert.match(run.out(), /; sent pixels\); /);
  assert.equal(readJson(join(dir, 'bundled', 'summary.json')).weights_sha256, w0.weights_sha256);
});

test('worker --data with no MNIST files is one clear line', async () => {
  const r = await runCli(WORKER, ['--connect', 'tcp://127.0.0.1:1', '--data', join(tempDir(), 'nowhere'), '--connect-timeout', '1']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^worker: error: .*nowhere: MNIST data directory does not exist$/m);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
});
