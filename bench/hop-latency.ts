/**
 * The local hop, alone: one round trip coordinator → worker → coordinator between two Node
 * processes, with the project's real messages (the assignment of a 32-sample `net` shard with its
 * sample indices, as a spawned worker that holds the training set gets it, or with --pixels its
 * pixels and labels; plus the step's 87 KB weights frame out; an 87 KB result back), over each
 * transport and socket setting that could matter. The variants run interleaved, in rounds, each
 * round starting at the next variant, so that the machine's load falls on all of them alike. Prints
 * one markdown table: median and p90 per variant, and each against the first variant's (today's
 * transport), overall and round by round. With --workers N a round trip is a step's messages: one
 * assignment to each of N workers (the weights frame shared), then every result back.
 *
 *   node dist/bench/hop-latency.js [--workers N] [--round-trips N] [--rounds R] [--shard-samples S] [--pixels] [--variants a,b,...]
 *
 * Defaults: one worker, 40 rounds of 40 round trips per variant, 32-sample shards, every variant. Exit status 2
 * on a bad flag, 1 when a round trip fails.
 *
 * The "worker" is this script started again with --child: it decodes each assignment as a worker
 * does (decodeCoordinatorMessage, the weights taken in with receivedFloat32), encodes a result of the
 * model's size (encode) and sends it back. No gradient is computed: what is left is the hop.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { type Server, type Socket as NetSocket, createConnection, createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Context, Dealer, Router } from 'zeromq';
import { createModel, paramLayout } from '../src/models/index.js';
import { receivedFloat32 } from '../src/protocol/grad-dtype.js';
import { quantile } from '../src/util/quantile.js';
import { type Assign, MAX_MESSAGE_BYTES, assignedSamples, decodeCoordinatorMessage, decodeWorkerMessage, encode, encodeAssign, encodeWeightsFrame } from '../src/protocol/messages.js';

const SCRIPT = fileURLToPath(import.meta.url);

/** One way of carrying the hop. `zmq` variants use ZeroMQ with these settings on both sides. */
interface Variant {
  name: string;
  what: string;
  transport: 'tcp' | 'ipc';
  /** No socket, no second process: the same encoding and decoding in this process (what the hop adds to it). */
  inProcess?: boolean;
  /** Not ZeroMQ: a plain node:net stream with length-prefixed frames (the floor without I/O threads). */
  plainNet?: boolean;
  ioThreads?: number;
  immediate?: boolean;
  /** Send and receive high-water marks, both sides (0 = no limit). */
  highWaterMark?: number;
  /**
   * Receive by polling: `readable` checked on every turn of the event loop for up to POLL_SPIN_MS
   * after the last message, so that the wake-up through libuv is skipped; then a plain receive().
   */
  poll?: boolean;
}

/** How long a polling receiver spins after its last message before it blocks (see Variant.poll). */
const POLL_SPIN_MS = 20;

const VARIANTS: Variant[] = [
  { name: 'tcp', what: 'tcp://127.0.0.1, default options (what spawned workers use today)', transport: 'tcp' },
  { name: 'ipc', what: 'ipc:// (unix socket), default options', transport: 'ipc' },
  { name: 'tcp-immediate', what: 'tcp, ZMQ_IMMEDIATE on both sockets', transport: 'tcp', immediate: true },
  { name: 'tcp-hwm0', what: 'tcp, send/receive high-water marks 0 (no limit)', transport: 'tcp', highWaterMark: 0 },
  { name: 'tcp-hwm1', what: 'tcp, send/receive high-water marks 1', transport: 'tcp', highWaterMark: 1 },
  { name: 'tcp-io2', what: 'tcp, 2 I/O threads per context', transport: 'tcp', ioThreads: 2 },
  { name: 'ipc-io2', what: 'ipc, 2 I/O threads per context', transport: 'ipc', ioThreads: 2 },
  { name: 'tcp-poll', what: `tcp, receive polled (readable checked every event-loop turn, up to ${POLL_SPIN_MS} ms after the last message)`, transport: 'tcp', poll: true },
  { name: 'net-tcp', what: 'no ZeroMQ: node:net over TCP loopback, length-prefixed frames', transport: 'tcp', plainNet: true },
  { name: 'net-unix', what: 'no ZeroMQ: node:net over a unix socket, length-prefixed frames', transport: 'ipc', plainNet: true },
  // The first variant again, on sockets and a child of its own: how far two identical variants drift apart.
  { name: 'tcp-again', what: 'tcp, as the first row: a control', transport: 'tcp' },
  { name: 'codec', what: 'no socket: the same encoding and decoding, both sides in one process', transport: 'ipc', inProcess: true },
];

/** The frames of one message, both ways: send them, and wait for the next message. */
interface Link {
  send(frames: Buffer[]): Promise<void>;
  receive(): Promise<Buffer[]>;
  close(): void;
}

// ---- ZeroMQ ----

function zmqOptions(v: Variant): Record<string, unknown> {
  return {
    linger: 0,
    maxMessageSize: MAX_MESSAGE_BYTES,
    ...(v.ioThreads ? { context: new Context({ ioThreads: v.ioThreads }) } : {}),
    ...(v.immediate ? { immediate: true } : {}),
    ...(v.highWaterMark !== undefined ? { sendHighWaterMark: v.highWaterMark, receiveHighWaterMark: v.highWaterMark } : {}),
  };
}

/** receive(), or with `poll` a check of `readable` on every event-loop turn (it spins), for a while. */
function zmqReceive(socket: Router | Dealer, poll: boolean): () => Promise<Buffer[]> {
  if (!poll) return () => socket.receive();
  let lastMessage = performance.now();
  return async () => {
    while (!socket.readable && performance.now() - lastMessage < POLL_SPIN_MS) await new Promise((r) => setImmediate(r));
    const frames = await socket.receive();
    lastMessage = performance.now();
    return frames;
  };
}

// ---- node:net, length-prefixed: [frame count u32][length u32, bytes]... ----

/** Messages in arrival order, from one connection or several. */
class Inbox {
  private readonly messages: Buffer[][] = [];
  private readonly waiters: Array<(m: Buffer[]) => void> = [];
  push(m: Buffer[]): void {
    const w = this.waiters.shift();
    if (w) w(m);
    else this.messages.push(m);
  }
  next(): Promise<Buffer[]> {
    const m = this.messages.shift();
    return m ? Promise.resolve(m) : new Promise((r) => this.waiters.push(r));
  }
}

function netLink(socket: NetSocket, inbox = new Inbox()): Link {
  let pending: Buffer = Buffer.alloc(0);
  socket.setNoDelay(true);
  socket.on('data', (chunk: Buffer) => {
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    for (;;) {
      if (pending.length < 4) return;
      const count = pending.readUInt32LE(0);
      let at = 4;
      const frames: Buffer[] = [];
      for (let i = 0; i < count; i++) {
        if (pending.length < at + 4) return;
        const len = pending.readUInt32LE(at);
        if (pending.length < at + 4 + len) return;
        frames.push(pending.subarray(at + 4, at + 4 + len));
        at += 4 + len;
      }
      pending = pending.subarray(at);
      inbox.push(frames);
    }
  });
  return {
    send(frames) {
      // The lengths in one small buffer, the frames as they are (no copy into one big buffer).
      const head = Buffer.alloc(4 + 4 * frames.length);
      head.writeUInt32LE(frames.length, 0);
      socket.cork();
      socket.write(head.subarray(0, 4));
      frames.forEach((f, i) => {
        head.writeUInt32LE(f.length, 4 + 4 * i);
        socket.write(head.subarray(4 + 4 * i, 8 + 4 * i));
        socket.write(f);
      });
      socket.uncork();
      return Promise.resolve();
    },
    receive: () => inbox.next(),
    close() {
      socket.destroy();
    },
  };
}

// ---- the worker's side ----

/** What the worker does with a message: the result to send back, 'stop', or nothing. */
function createAnswerer(): (frames: Buffer[]) => Buffer[] | 'stop' | undefined {
  const params = paramLayout(createModel('net')).total;
  const weightsBuffer = new Float32Array(params);
  let weights: Float32Array = weightsBuffer;
  const gradSum = new Float32Array(params).fill(0.25);
  return (frames) => {
    const msg = decodeCoordinatorMessage(frames);
    if (msg.type === 'shutdown') return 'stop';
    if (msg.type !== 'assign') return undefined;
    // As the worker takes them in; a first weight read stands for the engine's copy of them.
    if (msg.weights) weights = receivedFloat32(msg.weights, msg.weightsDtype ?? 'float32', weightsBuffer);
    gradSum[0] = weights[0];
    return [encode({ type: 'result', step: msg.step, shard: msg.shard, weightsVersion: msg.weightsVersion, gradSum, from: 0, lossSum: 1, count: assignedSamples(msg), computeMs: 0 })];
  };
}

async function child(endpoint: string, variant: Variant): Promise<void> {
  const answer = createAnswerer();
  let link: Link;
  if (variant.plainNet) {
    const path = endpoint.replace(/^(ipc|tcp):\/\//, '');
    const m = /^(.*):(\d+)$/.exec(path);
    const socket = variant.transport === 'tcp' && m ? createConnection(Number(m[2]), m[1]) : createConnection(path);
    await new Promise<void>((r) => socket.once('connect', () => r()));
    link = netLink(socket);
  } else {
    const dealer = new Dealer({ routingId: `hop-${process.pid}`, ...zmqOptions(variant) });
    dealer.connect(endpoint);
    link = { send: (f) => dealer.send(f), receive: zmqReceive(dealer, variant.poll === true), close: () => dealer.close() };
  }
  await link.send([encode({ type: 'heartbeat', t: Date.now() })]);
  for (;;) {
    const reply = answer(await link.receive());
    if (reply === 'stop') break;
    if (reply) await link.send(reply);
  }
  link.close();
}

// ---- the coordinator's side ----

/** One variant's coordinator side: its socket (or sockets) and its workers. */
interface Peer {
  variant: Variant;
  /** Sends to worker `i`. */
  sendTo(i: number, frames: Buffer[]): Promise<void>;
  /** The next message from any worker (its frames after the routing id). */
  receive(): Promise<Buffer[]>;
  procs: ChildProcess[];
  close(): void;
  /** Round-trip times, ms. */
  times: number[];
  /** Each round's median, ms: compared round by round with the first variant's. */
  roundMedians: number[];
}

function spawnWorker(endpoint: string, variant: Variant): ChildProcess {
  return spawn(process.execPath, [SCRIPT, '--child', endpoint, '--variant', variant.name], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
}

async function startPeer(variant: Variant, dir: string, workers: number): Promise<Peer> {
  const ipcPath = join(dir, `${variant.name}.sock`);
  const figures = { times: [], roundMedians: [] };
  if (variant.inProcess) {
    const answerers = Array.from({ length: workers }, () => createAnswerer());
    const replies = new Inbox();
    return {
      variant,
      sendTo(i, frames) {
        const reply = answerers[i](frames);
        if (Array.isArray(reply)) replies.push(reply);
        return Promise.resolve();
      },
      receive: () => replies.next(),
      procs: [],
      close() {},
      ...figures,
    };
  }
  if (variant.plainNet) {
    const server: Server = createServer();
    const address = variant.transport === 'ipc' ? ipcPath : { host: '127.0.0.1', port: 0 };
    await new Promise<void>((r) => server.listen(address, () => r()));
    const a = server.address();
    const endpoint = typeof a === 'string' ? `ipc://${a}` : `tcp://127.0.0.1:${a?.port}`;
    const inbox = new Inbox();
    const links: Link[] = [];
    const connected = new Promise<void>((r) =>
      server.on('connection', (socket) => {
        links.push(netLink(socket, inbox));
        if (links.length === workers) r();
      }),
    );
    const procs: ChildProcess[] = [];
    // One at a time, so that worker i is connection i.
    for (let i = 0; i < workers; i++) {
      procs.push(spawnWorker(endpoint, variant));
      await inbox.next();
    }
    await connected;
    return {
      variant,
      sendTo: (i, frames) => links[i].send(frames),
      receive: () => inbox.next(),
      procs,
      close() {
        for (const l of links) l.close();
        server.close();
      },
      ...figures,
    };
  }
  const router = new Router(zmqOptions(variant));
  await router.bind(variant.transport === 'ipc' ? `ipc://${ipcPath}` : 'tcp://127.0.0.1:*');
  const endpoint = router.lastEndpoint ?? '';
  const receive = zmqReceive(router, variant.poll === true);
  const procs: ChildProcess[] = [];
  const ids: Buffer[] = [];
  for (let i = 0; i < workers; i++) {
    procs.push(spawnWorker(endpoint, variant));
    ids.push((await receive())[0]);
  }
  return {
    variant,
    sendTo: (i, frames) => router.send([ids[i], ...frames]),
    receive: async () => (await receive()).slice(1),
    procs,
    close: () => router.close(),
    ...figures,
  };
}

/** One shard's samples as an assignment carries them: sample indices, or (`pixels`) pixels and labels. */
function shardSamples(n: number, pixels: boolean): Pick<Assign, 'indices' | 'pixels' | 'labels' | 'keys'> {
  const keys = new Uint32Array(n).fill(11);
  if (!pixels) return { indices: Uint32Array.from({ length: n }, (_, i) => 1000 + i), keys };
  return { pixels: new Uint8Array(n * 28 * 28).fill(7), labels: new Uint8Array(n).fill(3), keys };
}

/**
 * `n` round trips on `peer`, each as a step: a fresh weights frame, one assignment to each of
 * `workers` (shard i to worker i), then every result back.
 */
async function roundTrips(peer: Peer, n: number, workers: number, step: { value: number }, samples: Pick<Assign, 'indices' | 'pixels' | 'labels' | 'keys'>, params: Float32Array, record: boolean): Promise<void> {
  for (let k = 0; k < n; k++) {
    const s = step.value++;
    const started = performance.now();
    const weights = encodeWeightsFrame(params, 'float32');
    for (let i = 0; i < workers; i++) await peer.sendTo(i, encodeAssign({ type: 'assign', step: s, shard: i, weightsVersion: s, ...samples }, weights));
    for (let i = 0; i < workers; i++) {
      const [body] = await peer.receive();
      const result = decodeWorkerMessage(body);
      if (result.type !== 'result' || result.step !== s) throw new Error(`${peer.variant.name}: unexpected answer`);
    }
    if (record) peer.times.push(performance.now() - started);
  }
}

/** A bad flag: one line, exit status 2. */
function usage(problem: string): never {
  console.error(`hop-latency: ${problem}`);
  process.exit(2);
}

async function main(): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        child: { type: 'string' },
        variant: { type: 'string' },
        'round-trips': { type: 'string', default: '40' },
        rounds: { type: 'string', default: '40' },
        'shard-samples': { type: 'string', default: '32' },
        variants: { type: 'string' },
        pixels: { type: 'boolean', default: false },
        workers: { type: 'string', default: '1' },
      },
    });
  } catch (e) {
    usage((e as Error).message);
  }
  const { values } = parsed;
  if (values.child) {
    const v = VARIANTS.find((x) => x.name === values.variant);
    if (!v) throw new Error(`unknown variant ${values.variant}`);
    // No child outlives this script, however it ends.
    process.on('disconnect', () => process.exit(0));
    process.channel?.unref();
    await child(values.child, v);
    return;
  }
  const count = (flag: string, text: string | undefined): number => {
    const n = Number(text);
    if (!/^\d+$/.test(text ?? '') || n < 1) usage(`--${flag} ${text}: must be a positive integer`);
    return n;
  };
  const perRound = count('round-trips', values['round-trips']);
  const rounds = count('rounds', values.rounds);
  const samplesPerShard = count('shard-samples', values['shard-samples']);
  const workers = count('workers', values.workers);
  const samples = shardSamples(samplesPerShard, values.pixels === true);
  const wanted = values.variants?.split(',');
  const unknown = wanted?.filter((name) => !VARIANTS.some((v) => v.name === name));
  if (unknown?.length) usage(`--variants: unknown ${unknown.join(', ')}; known: ${VARIANTS.map((v) => v.name).join(', ')}`);
  const variants = wanted ? VARIANTS.filter((v) => wanted.includes(v.name)) : VARIANTS;
  const params = new Float32Array(paramLayout(createModel('net')).total).fill(0.5);
  const sample = encodeAssign({ type: 'assign', step: 1, shard: 0, weightsVersion: 1, ...samples }, encodeWeightsFrame(params, 'float32'));
  const resultBytes = encode({ type: 'result', step: 1, shard: 0, weightsVersion: 1, gradSum: params, from: 0, lossSum: 1, count: samplesPerShard, computeMs: 0 }).length;
  const dir = mkdtempSync(join(tmpdir(), 'hop-latency-'));
  const load0 = loadavg()[0];
  const peers: Peer[] = [];
  try {
    for (const v of variants) peers.push(await startPeer(v, dir, workers));
    const step = { value: 1 };
    // Warm-up: connections, JIT, buffers.
    for (const p of peers) await roundTrips(p, 50, workers, step, samples, params, false);
    for (let r = 0; r < rounds; r++) {
      // Each round starts at another variant: none always runs first (or right after another).
      for (let k = 0; k < peers.length; k++) {
        const p = peers[(r + k) % peers.length];
        const before = p.times.length;
        await roundTrips(p, perRound, workers, step, samples, params, true);
        p.roundMedians.push(quantile(p.times.slice(before), 0.5));
      }
    }
  } finally {
    for (const p of peers) {
      for (let i = 0; i < p.procs.length; i++) await p.sendTo(i, [encode({ type: 'shutdown', reason: 'done', finished: true })]).catch(() => {});
    }
    await new Promise((r) => setTimeout(r, 200));
    for (const p of peers) {
      p.close();
      for (const proc of p.procs) if (proc.exitCode === null) proc.kill();
    }
    rmSync(dir, { recursive: true, force: true });
  }
  const base = quantile(peers[0].times, 0.5);
  console.log(`# round trip coordinator → ${workers === 1 ? 'worker' : `${workers} workers`} → coordinator, ${new Date().toISOString().slice(0, 10)}`);
  console.log(`out: assignment header ${sample[0].length} B (${samplesPerShard} samples, ${values.pixels ? 'pixels and labels' : 'sample indices'}) + weights ${sample[1].length} B; back: result ${resultBytes} B`);
  if (workers > 1) console.log(`a round trip: one assignment to each of ${workers} workers (the weights frame shared), then every result back`);
  console.log(`${rounds} rounds × ${perRound} round trips per variant, interleaved; load average ${load0.toFixed(2)} → ${loadavg()[0].toFixed(2)}\n`);
  // The load moves during a run: each round's median against the first variant's in the same
  // round says more than the overall medians, and how often the variant was the faster says how sure.
  const percent = (x: number): string => `${(x * 100).toFixed(0).replace(/^(?!-)/, '+')}%`;
  console.log('| variant | what | median ms | p90 ms | median vs first | per round vs first (median) | rounds faster than first |');
  console.log('|---|---|---:|---:|---:|---:|---:|');
  for (const p of peers) {
    const med = quantile(p.times, 0.5);
    const ratios = p.roundMedians.map((m, r) => m / peers[0].roundMedians[r] - 1);
    const faster = ratios.filter((x) => x < 0).length;
    console.log(
      `| ${p.variant.name} | ${p.variant.what} | ${med.toFixed(3)} | ${quantile(p.times, 0.9).toFixed(3)} | ${percent(med / base - 1)} | ${percent(quantile(ratios, 0.5))} | ${faster}/${ratios.length} |`,
    );
  }
}

main().catch((e) => {
  console.error(`hop-latency: ${(e as Error).message}`);
  process.exit(1);
});
