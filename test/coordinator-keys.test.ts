/** CURVE keys and the ZAP allow-list, with real processes on loopback. */
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { COORDINATOR, WORKER, readJson, runCli, tempDir, waitFor, workerPids } from './helpers.js';

const SMALL = ['--epochs', '1', '--train-limit', '320', '--test-limit', '100'];

after(async () => {
  assert.ok(await waitFor(() => workerPids().length === 0, 5000), `workers left behind: ${workerPids().join(', ')}`);
});

test('keygen writes two key pairs, secrets private, and will not overwrite them', async () => {
  const dir = join(tempDir(), 'keys');
  const r = await runCli(COORDINATOR, ['keygen', '--out', dir]);
  assert.equal(r.code, 0, r.stderr);
  for (const f of ['coordinator.public', 'coordinator.secret', 'worker.public', 'worker.secret']) assert.ok(existsSync(join(dir, f)), f);
  assert.equal(statSync(join(dir, 'worker.secret')).mode & 0o077, 0, 'secret keys readable by the owner only');
  const again = await runCli(COORDINATOR, ['keygen', '--out', dir]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /already holds keys .*use --force/);
});

test('with --keys, spawned workers train over the encrypted link', async () => {
  const dir = tempDir();
  assert.equal((await runCli(COORDINATOR, ['keygen', '--out', join(dir, 'keys')])).code, 0);
  const r = await runCli(COORDINATOR, [...SMALL, '--workers', '2', '--keys', join(dir, 'keys'), '--out', join(dir, 'run')]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(readJson(join(dir, 'run', 'summary.json')).workers, 2);
});

test('a worker with keys from another keygen is refused on both sides and gets no data', async () => {
  const dir = tempDir();
  for (const k of ['a', 'b']) assert.equal((await runCli(COORDINATOR, ['keygen', '--out', join(dir, k)])).code, 0);
  const port = 21000 + (process.pid % 20000);
  const addr = `tcp://127.0.0.1:${port}`;
  const coordinator = runCli(COORDINATOR, [...SMALL, '--workers', '1', '--no-spawn', '--listen', addr, '--keys', join(dir, 'a'), '--connect-timeout', '6', '--out', join(dir, 'run')]);
  await new Promise((r) => setTimeout(r, 1500));
  const stranger = await runCli(WORKER, ['--connect', addr, '--keys', join(dir, 'b'), '--connect-timeout', '4']);
  assert.equal(stranger.code, 1);
  assert.match(stranger.stderr, /^worker: error: CURVE handshake with tcp:\/\/127\.0\.0\.1:\d+ failed: the coordinator's key is not the one in --keys/m);
  assert.doesNotMatch(stranger.stdout, /joined/);
  const c = await coordinator;
  assert.equal(c.code, 1);
  assert.match(c.stderr, /a connection failed the CURVE handshake .*keys from another keygen/);
  assert.match(c.stderr, /only 0 of 1 workers joined/);
  assert.ok(!existsSync(join(dir, 'run', 'summary.json')));
});

test('a worker whose own key is not on the allow-list is refused by ZAP', async () => {
  const dir = tempDir();
  for (const k of ['a', 'b']) assert.equal((await runCli(COORDINATOR, ['keygen', '--out', join(dir, k)])).code, 0);
  // The right coordinator key, but a worker pair the coordinator never admitted.
  const mixed = join(dir, 'mixed');
  const { cpSync } = await import('node:fs');
  cpSync(join(dir, 'b'), mixed, { recursive: true });
  cpSync(join(dir, 'a', 'coordinator.public'), join(mixed, 'coordinator.public'));
  const port = 22000 + (process.pid % 20000);
  const addr = `tcp://127.0.0.1:${port}`;
  const coordinator = runCli(COORDINATOR, [...SMALL, '--workers', '1', '--no-spawn', '--listen', addr, '--keys', join(dir, 'a'), '--connect-timeout', '5', '--out', join(dir, 'run')]);
  await new Promise((r) => setTimeout(r, 1500));
  const w = await runCli(WORKER, ['--connect', addr, '--keys', mixed, '--connect-timeout', '4']);
  assert.equal(w.code, 1);
  assert.match(w.stderr, /^worker: error: the coordinator at .* refused this worker's key/m);
  const c = await coordinator;
  assert.match(c.stderr, /refused a worker from 127\.0\.0\.1: its key is not on the allow-list/);
});

test('listening beyond loopback without keys is refused unless --insecure', async () => {
  const r = await runCli(COORDINATOR, [...SMALL, '--workers', '1', '--no-spawn', '--listen', 'tcp://0.0.0.0:5555', '--out', join(tempDir(), 'x')]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^coordinator: error: --listen tcp:\/\/0\.0\.0\.0:5555 reaches beyond this machine: give --keys DIR .* or --insecure/);
});
