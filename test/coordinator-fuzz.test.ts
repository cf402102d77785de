/**
 * Hostile input: thousands of random and mutated messages sent to a running coordinator. Each is
 * rejected and counted, none is applied: the weights end exactly as an undisturbed run's.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Dealer, Router } from 'zeromq';
import { MAX_MESSAGE_BYTES, PROTOCOL_VERSION, assignedSamples, decodeCoordinatorMessage, decodeWorkerMessage, encode, encodeAssign, encodeWeightsFrame } from '../src/protocol/messages.js';
import { createCodec } from '../src/util/codec.js';
import { SeededRng } from '../src/util/rng.js';
import { COORDINATOR, referenceRun, WORKER, freePort, readJson, runCli, startWorker, tempDir, waitFor, workerPids, workerIdentity } from './helpers.js';

/** What a worker of this build says of itself in its hello (a coordinator refuses a hello without it). */
const identity = await workerIdentity();

const RUN = ['--epochs', '1', '--train-limit', '1280', '--test-limit', '200', '--deterministic', '--log-interval', '5', '--worker-timeout', '2'];
const PARAMS = 21840;

after(async () => {
  assert.ok(await waitFor(() => workerPids().length === 0, 5000), `workers left behind: ${workerPids().join(', ')}`);
});

const codec = createCodec();
const rng = SeededRng.create(99);
const randomBytes = (n: number): Buffer => Buffer.from(Uint8Array.from({ length: n }, () => rng.int(256)));

const KINDS = ['random bytes', 'not a map', 'unknown type', 'wrong protocol version', 'result from a stranger', 'stale step', 'NaN gradient', 'wrong tensor size', 'numbers instead of float32', 'negative count', 'flipped bytes', 'wrong field types'];
const sentByKind = new Array<number>(KINDS.length).fill(0);

/** Messages that must all be rejected, of every kind the issue lists. */
function junk(i: number, step: number): Buffer {
  sentByKind[i % 12]++;
  // As `encode` sends them: tensors as their raw bytes.
  const bytes = (a: Float32Array): Uint8Array => new Uint8Array(a.buffer);
  const result = (extra: Record<string, unknown>): Buffer =>
    codec.pack({ type: 'result', step, shard: 0, weightsVersion: step, gradSum: bytes(new Float32Array(PARAMS)), lossSum: 1, count: 16, computeMs: 1, ...extra });
  switch (i % 12) {
    case 0: return randomBytes(1 + rng.int(300)); // not msgpack, or msgpack of garbage
    case 1: return codec.pack(rng.uniform()); // not a map
    case 2: return codec.pack({ type: 'launch-missiles', payload: randomBytes(10) }); // unknown type
    case 3: return codec.pack({ type: 'hello', protocol: PROTOCOL_VERSION + 7, workerId: 'x', backend: 'b', device: 'd' }); // wrong version
    case 4: return result({}); // result from a worker that never joined
    case 5: return result({ step: step + 1000 }); // stale / replayed step id
    case 6: return result({ gradSum: bytes(new Float32Array(PARAMS).fill(Number.NaN)) });
    case 7: return result({ gradSum: bytes(new Float32Array(17)) }); // wrong tensor size
    case 8: return result({ gradSum: Array.from({ length: 50 }, () => 0.5) }); // numbers, not a float32 tensor
    case 9: return result({ count: -3 });
    case 10: { // a real message with random bytes flipped
      const m = result({});
      for (let k = 0; k < 5; k++) m[rng.int(m.length)] ^= 1 + rng.int(255);
      return m;
    }
    default: return codec.pack({ type: 'result', step: 'zero', shard: {}, gradSum: 'x' });
  }
}

test('a fuzzed coordinator rejects and counts every bad message and ends with the undisturbed weights', async () => {
  const dir = tempDir();
  const reference = await referenceRun(RUN, dir);

  const port = 23000 + (process.pid % 20000);
  const addr = `tcp://127.0.0.1:${port}`;
  const coordinator = runCli(COORDINATOR, [...RUN, '--workers', '1', '--no-spawn', '--listen', addr, '--out', join(dir, 'fuzzed')]);
  await new Promise((r) => setTimeout(r, 1000));
  const honest = runCli(WORKER, ['--connect', addr]);

  // Attackers: anonymous sockets sending junk, and one that joins properly and then lies.
  let sent = 0;
  let done = false;
  const attackers = Array.from({ length: 4 }, (_, k) => new Dealer({ routingId: `attacker-${k}`, linger: 0, sendTimeout: 0 }));
  attackers.forEach((a) => a.connect(addr));
  const liar = new Dealer({ routingId: 'liar', linger: 0 });
  liar.connect(addr);
  await liar.send(encode({ type: 'hello', protocol: PROTOCOL_VERSION, workerId: 'liar', pid: 1, host: 'elsewhere', backend: 'wasm', device: 'x', ...identity }));
  const liarLoop = (async () => {
    let lies = 0;
    for await (const frames of liar) {
      const m = decodeCoordinatorMessage(frames);
      if (m.type !== 'assign') continue;
      // A result for its real shard, but poisoned: it must never be applied. The first lie is well
      // formed but infinite (the coordinator recomputes the shard to tell a liar from divergence),
      // later ones miscount.
      const first = lies++ === 0;
      const poison = first ? new Float32Array(PARAMS).fill(1e30 * 1e30) : new Float32Array(PARAMS).fill(1000);
      const count = first ? assignedSamples(m) : assignedSamples(m) + 1;
      await liar.send(encode({ type: 'result', step: m.step, shard: m.shard, weightsVersion: m.weightsVersion, gradSum: poison, lossSum: 0, count, computeMs: 0 }));
    }
  })().catch(() => {});
  // A worker sending its gradient in parts, tail first, whose second part does not end where the
  // first began: the first (well placed) part must be thrown away with the worker.
  const splitter = new Dealer({ routingId: 'splitter', linger: 0 });
  splitter.connect(addr);
  await splitter.send(encode({ type: 'hello', protocol: PROTOCOL_VERSION, workerId: 'splitter', pid: 2, host: 'elsewhere', backend: 'wasm', device: 'x', ...identity }));
  const splitterLoop = (async () => {
    for await (const frames of splitter) {
      const m = decodeCoordinatorMessage(frames);
      if (m.type !== 'assign') continue;
      const part = { type: 'result', step: m.step, shard: m.shard, weightsVersion: m.weightsVersion, lossSum: 1, count: assignedSamples(m), computeMs: 0 } as const;
      await splitter.send(encode({ ...part, from: PARAMS - 100, gradSum: new Float32Array(100).fill(7) }));
      await splitter.send(encode({ ...part, from: 0, gradSum: new Float32Array(50).fill(7) }));
    }
  })().catch(() => {});
  // Oversized: past ZeroMQ's maximum message size the coordinator drops the connection unread.
  const giant = new Dealer({ routingId: 'giant', linger: 0 });
  giant.connect(addr);
  await giant.send(Buffer.alloc(MAX_MESSAGE_BYTES + 1024, 7));
  const flood = (async () => {
    let step = 0;
    while (!done && sent < 6000) {
      for (const a of attackers) {
        try {
          await a.send(junk(sent, step));
          sent++;
        } catch {
          // the socket's queue is full: keep going
        }
      }
      step = (step + 1) % 20;
      if (sent % 200 === 0) await new Promise((r) => setTimeout(r, 5));
    }
  })();

  const c = await coordinator;
  done = true;
  await flood;
  attackers.forEach((a) => a.close());
  giant.close();
  liar.close();
  splitter.close();
  await liarLoop;
  await splitterLoop;
  assert.equal(c.code, 0, c.stderr);
  assert.equal((await honest).code, 0);
  assert.ok(sent >= 1000, `only ${sent} bad messages sent`);

  const fuzzed = readJson(join(dir, 'fuzzed', 'summary.json'));
  assert.equal(fuzzed.weights_sha256, reference.weights_sha256, 'no bad message changed the weights');
  assert.equal(fuzzed.steps, reference.steps);
  const stats = fuzzed.distributed as Record<string, number>;
  assert.ok(stats.rejected_messages >= 1000, `rejected ${stats.rejected_messages} of ${sent}`);
  assert.ok((fuzzed.worker_failures as number) >= 1, 'the liar was put out of the pool');
  assert.match(c.stderr, /rejected a message from attacker-\d/);
  assert.match(c.stderr, /lost worker liar: sent a non-finite gradient that recomputation does not reproduce/);
  assert.match(c.stderr, /lost worker splitter: sent an invalid result \(gradient part \[0, 50\), expected one ending at \d+\)/);
  assert.doesNotMatch(c.stderr, /rejected a message from giant/, 'the oversized message was never read');
  process.stdout.write(`# fuzz: ${KINDS.map((k, i) => `${k} ×${sentByKind[i]}`).join(', ')}; rejected ${stats.rejected_messages}; weights unchanged\n`);
});

test('a worker ignores an assignment whose weights frame is missing, extra or of the wrong size, and computes the well-formed one', async () => {
  const addr = `tcp://127.0.0.1:${await freePort()}`;
  const router = new Router({ linger: 0 });
  await router.bind(addr);
  const worker = startWorker(['--connect', addr]);
  try {
    const [id, helloFrame] = await router.receive();
    assert.equal(decodeWorkerMessage(helloFrame).type, 'hello');
    await router.send([id, encode({ type: 'welcome', model: 'net', params: PARAMS, heartbeatMs: 500, timeoutMs: 20_000 })]);
    const n = 4;
    const shard = (s: number) => ({ type: 'assign', step: 0, shard: s, weightsVersion: 0, pixels: new Uint8Array(n * 784).fill(40), labels: Uint8Array.of(1, 2, 3, 4), keys: Uint32Array.of(1, 2, 3, 4) }) as const;
    const weights = encodeWeightsFrame(Float32Array.from({ length: PARAMS }, (_, i) => Math.sin(i) / 20), 'float32');
    const [header0] = encodeAssign(shard(0), weights);
    const [header1] = encodeAssign(shard(1), weights);
    await router.send([id, header0]); // the weights frame missing
    await router.send([id, header1, weights.bytes.subarray(4)]); // one parameter short
    await router.send([id, ...encodeAssign(shard(2), weights), weights.bytes]); // a frame too many
    await router.send([id, ...encodeAssign(shard(3), weights)]);
    let result = decodeWorkerMessage((await router.receive())[1]);
    while (result.type === 'heartbeat') result = decodeWorkerMessage((await router.receive())[1]);
    assert.ok(result.type === 'result', `got a ${result.type}`);
    assert.equal(result.shard, 3, 'only the well-formed assignment is computed');
    assert.equal(result.count, n);
    assert.equal(result.gradSum.byteLength, PARAMS * 4);
    await router.send([id, encode({ type: 'shutdown', reason: 'test over', finished: true })]);
    assert.equal(await worker.exit, 0);
    const log = worker.log();
    assert.match(log, /ignored a bad message from the coordinator: assign without its weights frame/);
    assert.match(log, /ignored a bad message from the coordinator: assign with a weights frame of 87356 bytes, not 21840 float32 values \(87360 bytes\)/);
    assert.match(log, /ignored a bad message from the coordinator: assign of 3 frames/);
  } finally {
    worker.child.kill();
    router.close();
  }
});
