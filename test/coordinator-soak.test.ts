/**
 * Load and soak: one coordinator serves 32 connected workers (real processes, each computing real
 * gradients on one-sample shards) for 2000 steps. Memory and file descriptors must not grow, and
 * no step may be lost or applied twice.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { COORDINATOR, readJson, tempDir, waitFor, workerPids } from './helpers.js';

const WORKERS = 32;
const STEPS = 2000;

after(async () => {
  assert.ok(await waitFor(() => workerPids().length === 0, 10_000), `workers left behind: ${workerPids().length}`);
});

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : Number.NaN;
}

function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

test(`${WORKERS} workers, ${STEPS} steps: no growth of memory or descriptors, no lost or doubled step`, { timeout: 900_000 }, async () => {
  const out = join(tempDir(), 'soak');
  // batch 32 in shards of 1: every worker gets one sample per step.
  const args = ['--workers', String(WORKERS), '--batch-size', '32', '--deterministic', '--shard-size', '1', '--epochs', '2', '--train-limit', String((STEPS / 2) * 32), '--test-limit', '100', '--log-interval', '1', '--connect-timeout', '300', '--worker-timeout', '30', '--out', out];
  const child = spawn(process.execPath, [COORDINATOR, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.resume(); // thousands of log lines: progress is read from metrics.jsonl
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  const exit = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));

  const metrics = (): Array<{ type: string; step: number }> => {
    try {
      return readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    } catch {
      return [];
    }
  };
  const stepsDone = (): number => metrics().filter((m) => m.type === 'train').length;
  // Measure once the pool is warm (all workers joined, buffers grown), then near the end.
  assert.ok(await waitFor(() => stepsDone() >= 200, 600_000, 500), `too slow to start:\n${stderr.slice(-2000)}`);
  const early = { rss: rssKb(child.pid!), fds: openFds(child.pid!) };
  assert.ok(await waitFor(() => stepsDone() >= STEPS - 100, 900_000, 500), `too slow:\n${stderr.slice(-2000)}`);
  const late = { rss: rssKb(child.pid!), fds: openFds(child.pid!) };
  const code = await exit;
  assert.equal(code, 0, stderr.slice(-2000));

  const summary = readJson(join(out, 'summary.json'));
  assert.equal(summary.workers, WORKERS);
  assert.equal(summary.steps, STEPS);
  assert.equal(summary.worker_failures, 0);
  const trainSteps = metrics().filter((m) => m.type === 'train').map((m) => m.step);
  assert.equal(trainSteps.length, STEPS, 'one record per step');
  assert.deepEqual(trainSteps, Array.from({ length: STEPS }, (_, i) => i + 1), 'every step once, in order');
  assert.equal(late.fds, early.fds, `file descriptors ${early.fds} → ${late.fds}`);
  const growthMb = (late.rss - early.rss) / 1024;
  assert.ok(growthMb < 40, `coordinator RSS grew ${growthMb.toFixed(1)} MB over ${STEPS - 300} steps (${early.rss} → ${late.rss} kB)`);
  process.stdout.write(`# soak: ${WORKERS} workers, ${STEPS} steps; coordinator RSS ${(early.rss / 1024).toFixed(0)} → ${(late.rss / 1024).toFixed(0)} MB, fds ${early.fds} → ${late.fds}\n`);
});
