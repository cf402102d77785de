/**
 * Crash safety: a deterministic run killed with SIGKILL (coordinator and workers) and resumed
 * ends with the weights of an uninterrupted run. Checkpoints every few steps.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { COORDINATOR, referenceRun, readJson, runCli, tempDir, waitFor, workerPids } from './helpers.js';

const RUN = ['--epochs', '2', '--train-limit', '1024', '--test-limit', '200', '--deterministic', '--checkpoint-every', '3', '--log-interval', '1'];

after(async () => {
  assert.ok(await waitFor(() => workerPids().length === 0, 5000), `workers left behind: ${workerPids().join(', ')}`);
});

test('SIGKILL of coordinator and workers, then --resume: the weights of an uninterrupted run', async () => {
  const dir = tempDir();
  const reference = await referenceRun(RUN, dir);

  const out = join(dir, 'crashed');
  const child = spawn(process.execPath, [COORDINATOR, ...RUN, '--workers', '2', '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  // Kill mid-run, usually between two step checkpoints (every 3 steps).
  assert.ok(await waitFor(() => /Train Epoch: 1 \[448\//.test(stdout), 60_000), stdout);
  const workers = workerPids();
  child.kill('SIGKILL');
  for (const pid of workers) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone: workers leave when their coordinator does
    }
  }
  await new Promise((r) => child.on('exit', r));
  assert.ok(!existsSync(join(out, 'summary.json')));
  assert.ok(existsSync(join(out, 'checkpoint.bin')));

  const resumed = await runCli(COORDINATOR, ['--resume', '--workers', '2', '--out', out]);
  assert.equal(resumed.code, 0, resumed.stderr);
  // Where it resumes depends on when the kill landed: at the last step checkpoint before it.
  const at = /resuming from .*checkpoint\.bin at epoch (\d), step (\d+)/.exec(resumed.stdout);
  assert.ok(at, resumed.stdout);
  assert.ok(Number(at[2]) % 3 === 0 || Number(at[2]) === 16, `resumed at step ${at[2]}: a checkpoint every 3 steps or at the epoch's end`);
  assert.ok(Number(at[2]) < 32, 'resumed before the end');
  const resumedSummary = readJson(join(out, 'summary.json'));
  assert.equal(resumedSummary.weights_sha256, reference.weights_sha256);
  assert.equal(resumedSummary.steps, reference.steps);
});

test('SIGTERM: the coordinator checkpoints, stops its workers and exits; --resume finishes the run', async () => {
  const dir = tempDir();
  const out = join(dir, 'stopped');
  const child = spawn(process.execPath, [COORDINATOR, ...RUN, '--workers', '2', '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  assert.ok(await waitFor(() => /Train Epoch: 1 \[320\//.test(stdout), 60_000), stdout);
  child.kill('SIGTERM');
  const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  assert.equal(code, 130 + 13, stderr); // 128 + SIGTERM(15)
  assert.match(stderr, /interrupted at step \d+; checkpoint written, continue with --resume/);
  assert.ok(await waitFor(() => workerPids().length === 0, 5000), 'workers stopped');
  const resumed = await runCli(COORDINATOR, ['--resume', '--workers', '0', '--out', out]);
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.equal(readJson(join(out, 'summary.json')).steps, 32);
});
