/**
 * Per-shard deadlines: a worker that heartbeats but never answers cannot hold a step. Its late
 * shards go to another worker as well (backup execution), the first valid result wins, and after
 * three shards in a row lost to backups it leaves the pool; the run ends with the undisturbed weights.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { Dealer } from 'zeromq';
import { PROTOCOL_VERSION, encode } from '../src/protocol/messages.js';
import { COORDINATOR, referenceRun, WORKER, readJson, runCli, tempDir, freePort, workerIdentity } from './helpers.js';

/** What a worker of this build says of itself in its hello (a coordinator refuses a hello without it). */
const identity = await workerIdentity();

const RUN = ['--epochs', '1', '--train-limit', '640', '--test-limit', '100', '--deterministic', '--worker-timeout', '2'];

test('a worker that heartbeats but never answers: backups take its shards, it leaves after three, the run ends undisturbed', async () => {
  const dir = tempDir();
  const reference = await referenceRun(RUN, dir);

  const listen = `tcp://127.0.0.1:${await freePort()}`;
  const out = join(dir, 'run');
  const coordinator = runCli(COORDINATOR, [...RUN, '--workers', '2', '--no-spawn', '--listen', listen, '--out', out], { timeoutMs: 120_000 });
  // The silent one: joins, heartbeats, and never returns a shard.
  const zombie = new Dealer({ routingId: 'zombie', linger: 0 });
  zombie.connect(listen);
  await zombie.send(encode({ type: 'hello', protocol: PROTOCOL_VERSION, workerId: 'zombie', pid: 1, host: 'elsewhere', backend: 'wasm', device: 'x', ...identity }));
  const beat = setInterval(() => void zombie.send(encode({ type: 'heartbeat', t: Date.now() })).catch(() => {}), 300);
  const drain = (async () => {
    for await (const _ of zombie) {
      // assignments are ignored
    }
  })().catch(() => {});
  const honest = runCli(WORKER, ['--connect', listen], { timeoutMs: 120_000 });
  try {
    const r = await coordinator;
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stderr, /lost worker zombie: 3 of its shards in a row came back first from backups/);
    const s = readJson<{ weights_sha256: string; worker_failures: number; distributed: { backup_shards: number } }>(join(out, 'summary.json'));
    assert.equal(s.weights_sha256, reference.weights_sha256);
    assert.ok(s.distributed.backup_shards >= 3, `${s.distributed.backup_shards} backups`);
    assert.equal(s.worker_failures, 1);
    assert.equal((await honest).code, 0);
  } finally {
    clearInterval(beat);
    zombie.close();
    await drain;
  }
});
