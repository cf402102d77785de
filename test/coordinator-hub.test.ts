/**
 * The hub in this process, on a real loopback socket, with a raw DEALER as its worker: the order in
 * which it judges a sender's messages.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Dealer } from 'zeromq';
import { WorkerPool } from '../src/coordinator/pool.js';
import { PROTOCOL_VERSION, decodeCoordinatorMessage, encode } from '../src/protocol/messages.js';
import { createLogger } from '../src/util/logger.js';
import { Terminal } from '../src/util/terminal.js';
import { spawn } from 'node:child_process';
import { createModel, modelDigest, paramLayout } from '../src/models/index.js';
import { buildId } from '../src/util/build.js';
import { freePort, waitFor, workerIdentity } from './helpers.js';

/** What a worker of this build says of itself in its hello (a coordinator refuses a hello without it). */
const identity = await workerIdentity();

const P = 10;


test("a non-finite result's verdict comes before the sender's next message is read", async () => {
  const lines: string[] = [];
  const sink = { write: (s: string) => void lines.push(s), isTTY: false } as unknown as NodeJS.WriteStream;
  const logger = createLogger({ name: 'coordinator', terminal: new Terminal(sink, sink), terminalLevel: 'info' });
  const addr = `tcp://127.0.0.1:${await freePort()}`;
  let verifications = 0;
  const starting = WorkerPool.start({
    listen: addr,
    workers: 1,
    spawn: false,
    gpus: 0,
    noCuda: true,
    model: 'net',
    params: P,
    logger,
    connectTimeoutMs: 10_000,
    // A recomputation that takes a while (a GPU's, or a big shard's): the sender does not wait for it.
    verifyShard: async () => {
      verifications++;
      await new Promise((r) => setTimeout(r, 300));
      return false;
    },
  });
  const liar = new Dealer({ routingId: 'liar', linger: 0 });
  liar.connect(addr);
  await liar.send(encode({ type: 'hello', protocol: PROTOCOL_VERSION, workerId: 'liar', pid: 1, host: 'elsewhere', backend: 'wasm', device: 'test', ...identity }));
  const pool = await starting;
  try {
    const shard = { pixels: new Uint8Array(784), labels: new Uint8Array(1), keys: new Uint32Array(1) };
    void pool.computeBatch(0, new Float32Array(P), [shard, shard], new Float32Array(P)).catch(() => {});
    // Both shards come to the one member; it answers the first with an infinite gradient and, at
    // once, the second with a miscount.
    const assigned: number[] = [];
    for await (const frames of liar) {
      const m = decodeCoordinatorMessage(frames);
      if (m.type === 'assign') assigned.push(m.shard);
      if (assigned.length === 2) break;
    }
    const result = { type: 'result', step: 0, weightsVersion: 0, lossSum: 1, count: 1, computeMs: 1 } as const;
    await liar.send(encode({ ...result, shard: assigned[0], gradSum: new Float32Array(P).fill(Number.POSITIVE_INFINITY) }));
    await liar.send(encode({ ...result, shard: assigned[1], gradSum: new Float32Array(P), count: 2 }));
    const said = (): string => lines.join('');
    const deadline = Date.now() + 5000;
    while (!/lost worker liar/.test(said()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(verifications, 1);
    assert.match(said(), /lost worker liar: sent a non-finite gradient that recomputation does not reproduce/);
    assert.doesNotMatch(said(), /lost worker liar: sent an invalid result/, 'judged on its first lie, not on the one after it');
    // The message after the verdict is from a worker no longer in the pool.
    assert.match(said(), /rejected a message from liar: result from a worker that has not joined/);
    assert.equal(pool.workerFailures(), 1);
  } finally {
    liar.close();
    await pool.close(false);
  }
});

test('spawned workers that start slowly: with --min-workers 1 of 3 the pool starts with the first, and the others join late', async () => {
  const lines: string[] = [];
  const sink = { write: (s: string) => void lines.push(s), isTTY: false } as unknown as NodeJS.WriteStream;
  const logger = createLogger({ name: 'coordinator', terminal: new Terminal(sink, sink), terminalLevel: 'info' });
  const said = (): string => lines.join('');
  const net = createModel('net');
  let spawned = 0;
  const pool = await WorkerPool.start({
    listen: 'tcp://127.0.0.1:*',
    workers: 3,
    minWorkers: 1,
    spawn: true,
    gpus: 0,
    noCuda: true,
    model: 'net',
    params: paramLayout(net).total,
    logger,
    identity: { build: buildId(), model: 'net', modelDigest: modelDigest(net), deterministic: false },
    // The second and third start 5 s late, as on a slow node: a shell sleeps, then becomes the
    // worker (the same pid, the same IPC channel).
    spawnProcess: (command, args, options) => (spawned++ === 0 ? spawn(command, args, options) : spawn('sh', ['-c', 'sleep 5; exec "$0" "$@"', command, ...args], options)),
  });
  try {
    assert.ok(pool.liveFigures().workersConnected < 3, 'started before the slow ones joined');
    assert.equal(pool.liveFigures().workersRequired, 1, 'what mnist_ddp_workers_required reports');
    assert.match(said(), /starting with [12] of 3 workers \(--min-workers 1\); the others are admitted as they join/);
    assert.ok(await waitFor(() => pool.liveFigures().workersConnected === 3, 60_000), said());
    assert.match(said(), /worker \S+ joined late/);
  } finally {
    await pool.close(true);
  }
});

test('heartbeats from a connection not in the pool get "say hello again", once a second at most; a refused connection gets none', async () => {
  const lines: string[] = [];
  const sink = { write: (s: string) => void lines.push(s), isTTY: false } as unknown as NodeJS.WriteStream;
  const logger = createLogger({ name: 'coordinator', terminal: new Terminal(sink, sink), terminalLevel: 'info' });
  const addr = `tcp://127.0.0.1:${await freePort()}`;
  const starting = WorkerPool.start({ listen: addr, workers: 1, spawn: false, gpus: 0, noCuda: true, model: 'net', params: P, logger, connectTimeoutMs: 10_000 });
  const stranger = new Dealer({ routingId: 'stranger', linger: 0, receiveTimeout: 3000 });
  const refused = new Dealer({ routingId: 'refused', linger: 0, receiveTimeout: 3000 });
  stranger.connect(addr);
  refused.connect(addr);
  try {
    // Another protocol version: refused, and from then on never asked to say hello again.
    await refused.send(encode({ type: 'hello', protocol: PROTOCOL_VERSION + 1, workerId: 'refused', pid: 2, host: 'elsewhere', backend: 'wasm', device: 'test', ...identity }));
    assert.equal(decodeCoordinatorMessage(await refused.receive()).type, 'reject');
    // A flood of heartbeats over 1.5 s from each.
    const beat = encode({ type: 'heartbeat', t: 0 });
    const floodStart = Date.now();
    for (let i = 0; i < 150; i++) {
      await stranger.send(beat);
      await refused.send(beat);
      await new Promise((r) => setTimeout(r, 10));
    }
    const floodMs = Date.now() - floodStart;
    const answers = async (dealer: Dealer, quietMs: number): Promise<string[]> => {
      const types: string[] = [];
      dealer.receiveTimeout = quietMs;
      for (;;) {
        try {
          types.push(decodeCoordinatorMessage(await dealer.receive()).type);
        } catch {
          return types;
        }
      }
    };
    const toStranger = await answers(stranger, 1000);
    assert.ok(toStranger.length >= 1 && toStranger.every((t) => t === 'rehello'), toStranger.join());
    assert.ok(toStranger.length <= Math.ceil(floodMs / 1000) + 1, `${toStranger.length} answers to 150 heartbeats in ${floodMs} ms`);
    assert.deepEqual(await answers(refused, 200), []);
    // Its hello is the usual one, and it is admitted.
    await stranger.send(encode({ type: 'hello', protocol: PROTOCOL_VERSION, workerId: 'stranger', pid: 1, host: 'elsewhere', backend: 'wasm', device: 'test', ...identity }));
    // The pool starts once its one worker is in.
    await starting;
  } finally {
    stranger.close();
    refused.close();
    await starting.then((pool) => pool.close(false), () => {});
  }
});
