/** CURVE keys and the ZAP allow-list, with real processes on loopback. */
import assert from 'node:assert/strict';
import { cpSync, existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { helloProof, identifyWorker, loadCoordinatorKeys, loadWorkerKeys } from '../src/protocol/keys.js';
import { COORDINATOR, WORKER, readJson, runCli, startCoordinator, tempDir, waitFor, workerPids } from './helpers.js';

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

test('keygen --worker NAME adds a pair of its own and an allow-list entry; a bad name or a second time is one line', async () => {
  const dir = join(tempDir(), 'keys');
  const none = await runCli(COORDINATOR, ['keygen', '--out', dir, '--worker', 'alice']);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /^coordinator: error: --worker alice: .* holds no coordinator keys; run keygen --out .* first\n$/);
  assert.equal((await runCli(COORDINATOR, ['keygen', '--out', dir])).code, 0);
  const r = await runCli(COORDINATOR, ['keygen', '--out', dir, '--worker', 'alice']);
  assert.equal(r.code, 0, r.stderr);
  for (const f of ['allowed/alice.public', 'workers/alice/coordinator.public', 'workers/alice/worker.public', 'workers/alice/worker.secret', 'workers/alice/worker.name']) {
    assert.ok(existsSync(join(dir, f)), f);
  }
  assert.equal(readFileSync(join(dir, 'allowed', 'alice.public'), 'utf8'), readFileSync(join(dir, 'workers', 'alice', 'worker.public'), 'utf8'));
  assert.equal(readFileSync(join(dir, 'workers', 'alice', 'coordinator.public'), 'utf8'), readFileSync(join(dir, 'coordinator.public'), 'utf8'));
  assert.equal(statSync(join(dir, 'workers', 'alice', 'worker.secret')).mode & 0o077, 0, 'secret key readable by the owner only');
  assert.notEqual(readFileSync(join(dir, 'allowed', 'alice.public'), 'utf8'), readFileSync(join(dir, 'worker.public'), 'utf8'));
  const again = await runCli(COORDINATOR, ['keygen', '--out', dir, '--worker', 'alice']);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /already holds keys for worker alice; use --force/);
  const bad = await runCli(COORDINATOR, ['keygen', '--out', dir, '--worker', '../evil']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^coordinator: error: --worker \.\.\/evil: a name is 1 to 63 letters/);
});

test('a hello proves its key name: a worker holding one key cannot claim another name or reuse a proof', async () => {
  const dir = join(tempDir(), 'keys');
  assert.equal((await runCli(COORDINATOR, ['keygen', '--out', dir])).code, 0);
  for (const name of ['alice', 'bob']) assert.equal((await runCli(COORDINATOR, ['keygen', '--out', dir, '--worker', name])).code, 0);
  const coordinator = loadCoordinatorKeys(dir);
  const alice = loadWorkerKeys(join(dir, 'workers', 'alice'));
  const bob = loadWorkerKeys(join(dir, 'workers', 'bob'));
  assert.equal(alice.name, 'alice');
  const proof = (k: typeof alice, name: string, id: string): string => helloProof(k.client.secretKey, k.client.publicKey, k.serverPublicKey, name, id);
  assert.deepEqual(identifyWorker(coordinator, { keyName: 'alice', keyProof: proof(alice, 'alice', 'w1') }, 'w1'), { keyName: 'alice' });
  assert.deepEqual(identifyWorker(coordinator, { keyName: 'alice', keyProof: proof(bob, 'alice', 'w2') }, 'w2'), { refused: 'this worker does not hold the key of alice' });
  assert.deepEqual(identifyWorker(coordinator, { keyName: 'alice', keyProof: proof(alice, 'alice', 'w1') }, 'w3'), { refused: 'this worker does not hold the key of alice' });
  assert.deepEqual(identifyWorker(coordinator, { keyName: 'carol', keyProof: proof(alice, 'carol', 'w4') }, 'w4'), { refused: 'key carol is not on the allow-list (revoked, or never added)' });
  // The shared pair is admitted while worker.public is in the folder, and not after.
  assert.deepEqual(identifyWorker(coordinator, {}, 'w5'), {});
  rmSync(join(dir, 'worker.public'));
  assert.match((identifyWorker(coordinator, {}, 'w6') as { refused: string }).refused, /admits only workers with their own keys/);
});

test('per-worker keys: a worker is admitted and named by its key; revoked, it is dropped at once and refused; an unknown key is refused', async () => {
  const dir = tempDir();
  const keys = join(dir, 'keys');
  assert.equal((await runCli(COORDINATOR, ['keygen', '--out', keys])).code, 0);
  for (const name of ['alice', 'bob']) assert.equal((await runCli(COORDINATOR, ['keygen', '--out', keys, '--worker', name])).code, 0);
  // Named workers only: the shared pair is taken out of the coordinator's folder.
  rmSync(join(keys, 'worker.public'));
  rmSync(join(keys, 'worker.secret'));
  const other = join(dir, 'other');
  assert.equal((await runCli(COORDINATOR, ['keygen', '--out', other])).code, 0);
  assert.equal((await runCli(COORDINATOR, ['keygen', '--out', other, '--worker', 'mallory'])).code, 0);
  // The right coordinator key, and a pair of its own that this coordinator never admitted.
  cpSync(join(keys, 'coordinator.public'), join(other, 'workers', 'mallory', 'coordinator.public'));

  const run = startCoordinator(['--epochs', '1', '--train-limit', '10240', '--test-limit', '100', '--engine', 'wasm', '--workers', '2', '--no-spawn', '--listen', 'tcp://127.0.0.1:*', '--keys', keys, '--out', join(dir, 'run')]);
  try {
    assert.ok(await waitFor(() => /waiting for 2 workers on tcp:\/\/127\.0\.0\.1:\d+/.test(run.out()), 30_000), run.err());
    const addr = /waiting for 2 workers on (tcp:\/\/127\.0\.0\.1:\d+)/.exec(run.out())![1];
    const worker = (name: string, folder = join(keys, 'workers', name), extra: string[] = []) =>
      runCli(WORKER, ['--connect', addr, '--keys', folder, '--engine', 'wasm', '--connect-timeout', '5', ...extra]);
    const alice = worker('alice');
    const bob = worker('bob');
    assert.ok(await waitFor(() => /worker alice joined/.test(run.out()) && /worker bob joined/.test(run.out()), 30_000), run.out() + run.err());
    const revokedAt = Date.now();
    rmSync(join(keys, 'allowed', 'bob.public'));
    const b = await bob;
    const droppedMs = Date.now() - revokedAt;
    assert.equal(b.code, 77, 'put out: this worker alone');
    assert.match(b.stderr, /coordinator refused this worker: its key bob was revoked/);
    assert.match(run.err(), /lost worker bob: its key bob was revoked/);
    // Dropped within one heartbeat interval (0.5 s); the margin is for a loaded machine.
    assert.ok(droppedMs < 10_000, `dropped after ${droppedMs} ms`);
    // Refused at the handshake, they never train: reading no training set, they try sooner.
    const noData = ['--data', 'none'];
    const [again, mallory] = await Promise.all([worker('bob', undefined, noData), worker('mallory', join(other, 'workers', 'mallory'), noData)]);
    assert.doesNotMatch(run.out(), /done: test accuracy/, 'the run was still training when they tried');
    assert.equal(again.code, 1);
    assert.match(again.stderr, /refused this worker's key/);
    assert.equal(mallory.code, 1);
    assert.match(mallory.stderr, /refused this worker's key/);
    assert.equal(await run.exit, 0, run.err());
    assert.equal((await alice).code, 0);
    const summary = readJson(join(dir, 'run', 'summary.json'));
    const ids = (summary.devices as { workers?: { id: string }[] }).workers?.map((w) => w.id) ?? [];
    assert.deepEqual(ids.sort(), ['alice', 'bob'], JSON.stringify(summary.devices));
    process.stdout.write(`# revoked worker dropped ${droppedMs} ms after its key was removed\n`);
  } finally {
    run.child.kill('SIGKILL');
  }
});
