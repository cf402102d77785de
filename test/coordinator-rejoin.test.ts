/**
 * Workers rejoin: a worker whose coordinator vanished says hello again, and a coordinator resumed
 * on the same address gathers it; the run ends with the weights of an undisturbed one.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { COORDINATOR, WORKER, readJson, runCli, tempDir, waitFor } from './helpers.js';

const RUN = ['--epochs', '1', '--train-limit', '1280', '--test-limit', '200', '--deterministic', '--checkpoint-every', '2', '--log-interval', '1', '--worker-timeout', '2'];

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

test('a coordinator killed and resumed on the same address gathers its live worker again: the undisturbed weights', async () => {
  const dir = tempDir();
  const reference = await runCli(COORDINATOR, [...RUN, '--workers', '0', '--out', join(dir, 'reference')]);
  assert.equal(reference.code, 0, reference.stderr);

  const listen = `tcp://127.0.0.1:${await freePort()}`;
  const out = join(dir, 'run');
  const first = spawn(process.execPath, [COORDINATOR, ...RUN, '--workers', '1', '--no-spawn', '--listen', listen, '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
  let firstOut = '';
  first.stdout.on('data', (d: Buffer) => (firstOut += d));
  // One worker, started on its own, as on another machine.
  const worker = spawn(process.execPath, [WORKER, '--connect', listen, '--connect-timeout', '60'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let workerLog = '';
  worker.stdout.on('data', (d: Buffer) => (workerLog += d));
  worker.stderr.on('data', (d: Buffer) => (workerLog += d));
  let workerExit: number | null | undefined;
  worker.on('exit', (code) => (workerExit = code));

  assert.ok(await waitFor(() => /Train Epoch: 1 \[384\//.test(firstOut), 60_000), firstOut);
  first.kill('SIGKILL');
  await new Promise((r) => first.on('exit', r));

  // The same address, resumed; the worker was never restarted.
  const resumed = await runCli(COORDINATOR, ['--resume', '--workers', '1', '--no-spawn', '--listen', listen, '--out', out], { timeoutMs: 120_000 });
  assert.equal(resumed.code, 0, resumed.stdout + resumed.stderr);
  assert.match(workerLog, /saying hello again/);
  assert.match(workerLog, /rejoined the coordinator/);
  assert.ok(await waitFor(() => workerExit !== undefined, 15_000), 'the worker leaves when the run is done');
  assert.equal(workerExit, 0, workerLog);
  assert.equal(readJson(join(out, 'summary.json')).weights_sha256, readJson(join(dir, 'reference', 'summary.json')).weights_sha256);
});

test('a worker dropped for silence comes back on its own and is admitted; --empty-pool-timeout keeps the run waiting for it', async () => {
  const dir = tempDir();
  const reference = await runCli(COORDINATOR, [...RUN, '--workers', '0', '--out', join(dir, 'reference')]);
  assert.equal(reference.code, 0, reference.stderr);

  const listen = `tcp://127.0.0.1:${await freePort()}`;
  const out = join(dir, 'run');
  const coordinator = spawn(process.execPath, [COORDINATOR, ...RUN, '--workers', '1', '--no-spawn', '--listen', listen, '--empty-pool-timeout', '60', '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  coordinator.stdout.on('data', (d: Buffer) => (stdout += d));
  coordinator.stderr.on('data', (d: Buffer) => (stderr += d));
  const exited = new Promise<number | null>((r) => coordinator.on('exit', (code) => r(code)));
  const worker = spawn(process.execPath, [WORKER, '--connect', listen, '--connect-timeout', '60'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let workerLog = '';
  worker.stdout.on('data', (d: Buffer) => (workerLog += d));
  worker.stderr.on('data', (d: Buffer) => (workerLog += d));
  assert.ok(await waitFor(() => /Train Epoch: 1 \[64\//.test(stdout), 30_000), stdout + workerLog);
  // A partition, as the coordinator sees it: the only worker falls silent past --worker-timeout.
  worker.kill('SIGSTOP');
  assert.ok(await waitFor(() => /no worker left/.test(stderr), 15_000), stderr);
  worker.kill('SIGCONT');

  const code = await exited;
  assert.equal(code, 0, stdout + stderr);
  assert.match(stderr, /lost worker .*: silent for/);
  assert.match(stderr, /no worker left; waiting up to 60 s/);
  assert.match(workerLog, /rejoined the coordinator/);
  const summary = readJson(join(out, 'summary.json'));
  assert.equal(summary.weights_sha256, readJson(join(dir, 'reference', 'summary.json')).weights_sha256);
  assert.ok(await waitFor(() => worker.exitCode !== null, 15_000));
  assert.equal(worker.exitCode, 0, workerLog);
});

test('SIGTERM with no worker left checkpoints and exits 143 at once; --resume ends with the undisturbed weights', async () => {
  const dir = tempDir();
  const reference = await runCli(COORDINATOR, [...RUN, '--workers', '0', '--out', join(dir, 'reference')]);
  assert.equal(reference.code, 0, reference.stderr);

  const listen = `tcp://127.0.0.1:${await freePort()}`;
  const out = join(dir, 'run');
  const coordinator = spawn(process.execPath, [COORDINATOR, ...RUN, '--workers', '1', '--no-spawn', '--listen', listen, '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  coordinator.stdout.on('data', (d: Buffer) => (stdout += d));
  coordinator.stderr.on('data', (d: Buffer) => (stderr += d));
  const exited = new Promise<number | null>((r) => coordinator.on('exit', (code) => r(code)));
  const worker = spawn(process.execPath, [WORKER, '--connect', listen], { stdio: 'ignore' });
  assert.ok(await waitFor(() => /Train Epoch: 1 \[64\//.test(stdout), 30_000), stdout);
  worker.kill('SIGKILL');
  assert.ok(await waitFor(() => /no worker left/.test(stderr), 15_000), stderr);
  const signalled = Date.now();
  coordinator.kill('SIGTERM');
  assert.equal(await exited, 143, stderr);
  assert.ok(Date.now() - signalled < 5000, `took ${Date.now() - signalled} ms to stop`);
  assert.match(stderr, /interrupted at step \d+; checkpoint written/);

  const resumed = await runCli(COORDINATOR, ['--resume', '--workers', '1', '--out', out], { timeoutMs: 120_000 });
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.equal(readJson(join(out, 'summary.json')).weights_sha256, readJson(join(dir, 'reference', 'summary.json')).weights_sha256);
});
