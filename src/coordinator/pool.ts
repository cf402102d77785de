/**
 * The coordinator's side of distributed training: a ROUTER socket, the workers that joined it,
 * and the distribution of each step's shards among them. It is a GradientSource, so the training
 * loop does not know whether gradients come from here or from its own process.
 *
 * Faults: a worker is lost when its process exits (spawned workers) or when it has been silent
 * for `workerTimeoutMs`. Its unfinished shards go to the others at once; a spawned worker is
 * started again; any worker that says hello later is put to work. A result counts only if it is
 * for the current step, from the worker that shard was assigned to, and well-formed; the first
 * valid result of a shard wins, so no shard is counted twice.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { hostname } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Router } from 'zeromq';
import type { EngineChoice } from '../engine/backend.js';
import type { ShardData } from '../training/gradients.js';
import type { AugmentOptions } from '../training/augment.js';
import { type BatchResult, type DeviceDescription, type GradientSource, reduceInShardOrder } from '../training/source.js';
import { UserError } from '../util/errors.js';
import type { CoordinatorKeys } from '../protocol/keys.js';
import { ZAP_DOMAIN, type ZapHandler, startZapHandler } from './zap.js';
import type { Logger } from '../util/logger.js';
import {
  type CoordinatorMessage,
  type Hello,
  MAX_MESSAGE_BYTES,
  PROTOCOL_VERSION,
  type ReceivedResult,
  SendQueue,
  copyTensor,
  decodeWorkerMessage,
  encode,
} from '../protocol/messages.js';

const WORKER_SCRIPT = fileURLToPath(new URL('../cli/worker.js', import.meta.url));

export interface PoolOptions {
  /** Address to bind; `tcp://127.0.0.1:*` picks a free loopback port. */
  listen: string;
  /** Workers expected before training starts. */
  workers: number;
  /** Start the workers as child processes (else wait for them to connect). */
  spawn: boolean;
  /** GPUs to pin spawned workers to, round-robin (0 = none). */
  gpus: number;
  noCuda: boolean;
  /** --engine for spawned workers. */
  engine?: EngineChoice;
  model: string;
  params: number;
  /** Augmentation the workers apply (config.augment). */
  augment?: AugmentOptions;
  logger: Logger;
  heartbeatMs?: number;
  /** A worker silent this long is declared lost. */
  workerTimeoutMs?: number;
  /** How long to wait for the expected workers at start. */
  connectTimeoutMs?: number;
  /** With no worker left, how long to wait for one before giving up. */
  allGoneTimeoutMs?: number;
  /** Extra arguments for spawned workers (e.g. --keys DIR). */
  workerArgs?: string[];
  /** CURVE keys: encrypt the link and admit only allow-listed workers (--keys DIR). */
  keys?: CoordinatorKeys;
  /** Where the keys came from, passed on to spawned workers. */
  keysDir?: string;
  /**
   * Recomputes a shard here and says whether its gradient is non-finite too: tells a lying or broken
   * worker (evicted) from a diverged model (the run stops).
   */
  verifyShard?: (weights: Float32Array, shard: ShardData) => Promise<boolean>;
}

interface Member {
  id: string;
  hello: Hello;
  lastHeard: number;
  /** The weights version this worker holds. */
  weightsVersion: number;
  /** Shards of the current step assigned to it and not yet returned. */
  pending: Set<number>;
  child?: ChildProcess;
  /** Order of joining: ties in the least-work choice go to the earliest worker. */
  joined: number;
}

/** One shard's place in a step; the pool keeps one per shard index and reuses it every step. */
interface ShardSlot {
  /** Where the shard's gradient is copied from the received frames (parts tail first). */
  buffer: Float32Array;
  /** Where the parts received so far begin (the parameter count: none yet). */
  from: number;
  /** The whole gradient is in. */
  done: boolean;
  lossSum: number;
  count: number;
  /** The worker it is assigned to now. */
  assignee: string | undefined;
}

interface StepInFlight {
  step: number;
  weights: Float32Array;
  shards: ShardData[];
  /** Where the reduced gradient goes. */
  gradSum: Float32Array;
  remaining: number;
  resolve: (r: BatchResult) => void;
  reject: (e: Error) => void;
}

export interface PoolStats {
  /** Bytes the coordinator sent / received per step, on average. */
  bytes_sent_per_step: number;
  bytes_received_per_step: number;
  /** Coordinator's own time per step: last gradient in → reduction, update → next weights out. */
  coordinator_ms_per_step: number;
  rejected_messages: number;
  stale_results: number;
  reassigned_shards: number;
  /** Mean time a worker spent on one shard, from the assignment's arrival to its result. */
  worker_compute_ms_per_shard: number;
  /** The largest peak resident memory any worker reported, MB. */
  worker_peak_rss_mb: number;
  /** Connections refused by CURVE/ZAP (wrong or missing keys). */
  refused_connections: number;
}

export class WorkerPool implements GradientSource {
  readonly workers: number;
  private readonly router: Router;
  private readonly sendQueue: SendQueue;
  private readonly members = new Map<string, Member>();
  private readonly joinedDevices = new Map<string, DeviceDescription>();
  private readonly children = new Set<ChildProcess>();
  private failures = 0;
  private restarts = 0;
  private joinOrder = 0;
  private current: StepInFlight | undefined;
  private closing = false;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private allGoneTimer: NodeJS.Timeout | undefined;
  private receiveLoop: Promise<void> | undefined;
  private joinWaiters: Array<() => void> = [];
  private readonly opts: Required<Omit<PoolOptions, 'keys' | 'keysDir' | 'workerArgs' | 'verifyShard' | 'augment' | 'engine'>> &
    Pick<PoolOptions, 'keys' | 'keysDir' | 'workerArgs' | 'verifyShard' | 'augment' | 'engine'>;
  private zap: ZapHandler | undefined;
  private handshakeFailures = 0;
  private stats = { bytesSent: 0, bytesReceived: 0, steps: 0, coordinatorMs: 0, rejected: 0, stale: 0, reassigned: 0, workerPeakRss: 0, shardsComputed: 0, workerComputeMs: 0 };
  private lastStepDoneAt: number | undefined;
  /** Reused from step to step: one slot per shard index, and its gradient buffer (also in `slotBuffers`, for the reduction). */
  private readonly slots: ShardSlot[] = [];
  private readonly slotBuffers: Float32Array[] = [];
  endpoint = '';

  private constructor(opts: PoolOptions) {
    this.opts = {
      heartbeatMs: 500,
      workerTimeoutMs: 5000,
      connectTimeoutMs: 60000,
      allGoneTimeoutMs: 30000,
      ...opts,
    };
    this.workers = opts.workers;
    const curve: Partial<Router> = opts.keys
      ? {
          curveServer: true,
          curvePublicKey: opts.keys.server.publicKey,
          curveSecretKey: opts.keys.server.secretKey,
          zapDomain: ZAP_DOMAIN,
          // No ZAP handler, no entry: a missing handler must not mean "everyone may join".
          zapEnforceDomain: true,
        }
      : {};
    this.router = new Router({ linger: 0, maxMessageSize: MAX_MESSAGE_BYTES, ...curve });
    this.sendQueue = new SendQueue((frames) => this.router.send(frames));
  }

  /** Binds, starts (or waits for) the workers, and returns once all of them have joined. */
  static async start(opts: PoolOptions): Promise<WorkerPool> {
    const pool = new WorkerPool(opts);
    if (opts.keys) {
      pool.zap = await startZapHandler(opts.keys.allowed, opts.logger);
      pool.watchHandshakes();
    }
    try {
      await pool.router.bind(opts.listen);
    } catch (e) {
      pool.zap?.close();
      throw new UserError(`cannot listen on ${opts.listen}: ${(e as Error).message}`);
    }
    pool.endpoint = pool.router.lastEndpoint ?? opts.listen;
    pool.receiveLoop = pool.receive();
    pool.heartbeatTimer = setInterval(() => pool.tick(), pool.opts.heartbeatMs);
    process.on('exit', pool.killChildrenNow);
    if (opts.spawn) for (let i = 0; i < opts.workers; i++) pool.spawnWorker(i);
    else opts.logger.info(`waiting for ${opts.workers} workers on ${pool.endpoint}`);
    try {
      await pool.waitForMembers(opts.workers, pool.opts.connectTimeoutMs);
    } catch (e) {
      await pool.close(false);
      throw e;
    }
    return pool;
  }

  /** Logs CURVE handshakes that fail before ZAP is asked (a worker holding another coordinator key). */
  private watchHandshakes(): void {
    void (async () => {
      try {
        for await (const event of this.router.events) {
          if (event.type === 'handshake:error:protocol' || event.type === 'handshake:error:other') {
            this.handshakeFailures++;
            // One line per burst: a misconfigured worker retries every few hundred milliseconds.
            if (this.handshakeFailures === 1 || this.handshakeFailures % 50 === 0) {
              this.opts.logger.warn(
                `a connection failed the CURVE handshake (${this.handshakeFailures} so far): a worker with keys from another keygen, or without --keys`,
              );
            }
          }
        }
      } catch {
        // socket closed
      }
    })();
  }

  /** Connection attempts refused: failed handshakes and keys not on the allow-list. */
  refusedConnections(): number {
    return this.handshakeFailures + (this.zap?.refused() ?? 0);
  }

  workerFailures(): number {
    return this.failures;
  }

  /** Every worker that joined during the run, with the engine and device it computed on. */
  workerDevices(): DeviceDescription[] {
    return [...this.joinedDevices.values()];
  }

  poolStats(): PoolStats {
    const steps = Math.max(1, this.stats.steps);
    return {
      bytes_sent_per_step: this.stats.bytesSent / steps,
      bytes_received_per_step: this.stats.bytesReceived / steps,
      coordinator_ms_per_step: this.stats.coordinatorMs / Math.max(1, steps - 1),
      rejected_messages: this.stats.rejected,
      stale_results: this.stats.stale,
      reassigned_shards: this.stats.reassigned,
      // What a shard's gradient took on its worker (from its arrival to its result), against the
      // step's wall time: the rest is communication and the coordinator's share.
      worker_compute_ms_per_shard: this.stats.shardsComputed ? this.stats.workerComputeMs / this.stats.shardsComputed : 0,
      worker_peak_rss_mb: this.stats.workerPeakRss / 2 ** 20,
      refused_connections: this.refusedConnections(),
    };
  }

  computeBatch(step: number, weights: Float32Array, shards: ShardData[], gradSum: Float32Array): Promise<BatchResult> {
    if (this.current) return Promise.reject(new Error('a step is already in flight'));
    return new Promise<BatchResult>((resolve, reject) => {
      const flight: StepInFlight = {
        step,
        weights,
        shards,
        gradSum,
        remaining: shards.length,
        resolve: (r) => {
          this.current = undefined;
          resolve(r);
        },
        reject: (e) => {
          this.current = undefined;
          reject(e);
        },
      };
      this.resetSlots(shards.length);
      this.current = flight;
      this.stats.steps++;
      for (let shard = 0; shard < shards.length; shard++) this.assign(shard);
      if (this.lastStepDoneAt !== undefined) this.stats.coordinatorMs += performance.now() - this.lastStepDoneAt;
      this.finishIfComplete();
    });
  }

  /** Resets the first `count` slots for a new step (creating them the first time a step has this many shards). */
  private resetSlots(count: number): void {
    while (this.slots.length < count) {
      const buffer = new Float32Array(this.opts.params);
      this.slots.push({ buffer, from: this.opts.params, done: false, lossSum: 0, count: 0, assignee: undefined });
      this.slotBuffers.push(buffer);
    }
    for (let i = 0; i < count; i++) {
      const slot = this.slots[i];
      slot.from = this.opts.params;
      slot.done = false;
      slot.assignee = undefined;
    }
  }

  /** Gives `shard` of the current step to the live worker with the least work (or leaves it for a later joiner). */
  private assign(shard: number, exclude?: string): void {
    const flight = this.current;
    if (!flight) return;
    const slot = this.slots[shard];
    slot.from = this.opts.params; // parts from an earlier assignee do not count
    let best: Member | undefined;
    for (const m of this.members.values()) {
      if (m.id === exclude) continue;
      if (!best || m.pending.size < best.pending.size || (m.pending.size === best.pending.size && m.joined < best.joined)) best = m;
    }
    slot.assignee = best?.id;
    if (!best) return; // no worker now: a joiner takes it (see onHello), or the all-gone timer fires
    best.pending.add(shard);
    const data = flight.shards[shard];
    const withWeights = best.weightsVersion !== flight.step;
    best.weightsVersion = flight.step;
    this.sendTo(best.id, {
      type: 'assign',
      step: flight.step,
      shard,
      weightsVersion: flight.step,
      ...(withWeights ? { weights: flight.weights } : {}),
      pixels: data.pixels,
      labels: data.labels,
      keys: data.keys,
    });
  }

  private sendTo(id: string, message: CoordinatorMessage): void {
    const frame = encode(message);
    this.stats.bytesSent += frame.length;
    this.sendQueue.send([id, frame]).catch((e) => this.opts.logger.debug(`send to ${id} failed: ${(e as Error).message}`));
  }

  private async receive(): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await this.router.receive();
      } catch (e) {
        if (this.closing || this.router.closed) return;
        this.opts.logger.error(`receive failed: ${(e as Error).message}`);
        continue;
      }
      const [idFrame, ...rest] = frames;
      const id = idFrame.toString('utf8');
      const body = rest[rest.length - 1];
      if (!body) continue;
      this.stats.bytesReceived += body.length;
      try {
        this.dispatch(id, body);
      } catch (e) {
        this.stats.rejected++;
        this.opts.logger.warn({ worker: id }, `rejected a message from ${id.slice(0, 60)}: ${(e as Error).message}`);
      }
    }
  }

  private dispatch(id: string, body: Buffer): void {
    const msg = decodeWorkerMessage(body);
    const member = this.members.get(id);
    if (member) member.lastHeard = Date.now();
    switch (msg.type) {
      case 'hello':
        this.onHello(id, msg);
        return;
      case 'result':
        if (!member) throw new Error('result from a worker that has not joined');
        this.onResult(member, msg);
        return;
      case 'heartbeat':
        if (typeof msg.peakRss === 'number' && msg.peakRss > this.stats.workerPeakRss) this.stats.workerPeakRss = msg.peakRss;
        return;
      case 'bye':
        if (member) this.lose(member, `left: ${msg.reason}`, true);
        return;
    }
  }

  private onHello(id: string, hello: Hello): void {
    if (hello.protocol !== PROTOCOL_VERSION) {
      this.sendTo(id, { type: 'reject', reason: `protocol version ${hello.protocol}, coordinator speaks ${PROTOCOL_VERSION}` });
      throw new Error(`worker ${id} speaks protocol ${hello.protocol}`);
    }
    if (this.members.has(id)) return; // a repeated hello changes nothing
    const child = [...this.children].find((c) => c.pid === hello.pid && hello.host === hostname());
    const member: Member = { id, hello, lastHeard: Date.now(), weightsVersion: -1, pending: new Set(), child, joined: this.joinOrder++ };
    this.members.set(id, member);
    this.joinedDevices.set(id, { id, backend: hello.backend, device: hello.device, ...(hello.adapter ? { adapter: hello.adapter } : {}) });
    this.sendTo(id, {
      type: 'welcome',
      model: this.opts.model,
      params: this.opts.params,
      heartbeatMs: this.opts.heartbeatMs,
      timeoutMs: Math.max(this.opts.workerTimeoutMs * 2, 10000),
      ...(this.opts.augment ? { augment: this.opts.augment } : {}),
      // Measured on 2 cores with 2 spawned workers, an early part costs ~10%: receiving it wakes
      // the coordinator mid-step, on a core a worker needs. Workers that joined from elsewhere
      // do not share the coordinator's cores, and their transfers take longer: they stream.
      streamGradients: member.child === undefined,
    });
    this.opts.logger.info({ worker: id, backend: hello.backend, device: hello.device }, `worker ${id} joined (${hello.backend} on ${hello.device}); ${this.members.size} in the pool`);
    if (this.allGoneTimer) {
      clearTimeout(this.allGoneTimer);
      this.allGoneTimer = undefined;
    }
    // Shards that found no worker wait for this one.
    const flight = this.current;
    if (flight) for (let s = 0; s < flight.shards.length; s++) if (!this.slots[s].done && this.slots[s].assignee === undefined) this.assign(s);
    this.joinWaiters.splice(0).forEach((w) => w());
  }

  private onResult(member: Member, r: ReceivedResult): void {
    const flight = this.current;
    if (!flight || r.step !== flight.step) {
      this.stats.stale++;
      return;
    }
    if (r.shard >= flight.shards.length || this.slots[r.shard].assignee !== member.id) {
      throw new Error(`result for shard ${r.shard} of step ${r.step}, which is not assigned to this worker`);
    }
    const problem = this.checkResult(r, flight);
    if (problem) {
      // A worker that returns a broken result for its own shard cannot be trusted with more:
      // it leaves the pool, and its shards (this one included) go to the others.
      this.lose(member, `sent an invalid result (${problem})`, true);
      throw new Error(`invalid result for shard ${r.shard} of step ${r.step}: ${problem}`);
    }
    const slot = this.slots[r.shard];
    if (slot.done) return;
    // Straight from the received frame into the shard's buffer, kept from step to step. A gradient
    // sent in parts is put together there, tail first.
    const from = r.from ?? 0;
    copyTensor(r.gradSum, slot.buffer, from);
    if (!Number.isFinite(r.lossSum) || !allFinite(slot.buffer, from, slot.from)) {
      // Either the sender is faulty or the model has diverged: recomputing the shard here tells
      // which. The recomputation may run on a GPU, so the verdict arrives later; the shard stays
      // assigned to this worker until then.
      if (!this.opts.verifyShard) this.judgeNonFinite(member, r, flight, false);
      this.opts.verifyShard(flight.weights, flight.shards[r.shard]).then(
        (reproduced) => {
          try {
            if (this.current === flight && this.members.get(member.id) === member) this.judgeNonFinite(member, r, flight, reproduced);
          } catch (e) {
            this.stats.rejected++;
            this.opts.logger.warn({ worker: member.id }, `rejected a message from ${member.id.slice(0, 60)}: ${(e as Error).message}`);
          }
        },
        (e: Error) => flight.reject(e),
      );
      return;
    }
    slot.from = from;
    if (from > 0) return;
    member.pending.delete(r.shard);
    slot.done = true;
    slot.lossSum = r.lossSum;
    slot.count = r.count;
    this.stats.shardsComputed++;
    this.stats.workerComputeMs += r.computeMs;
    flight.remaining--;
    this.finishIfComplete();
  }

  /**
   * A non-finite gradient: when recomputing the shard here gives a non-finite one too, the model
   * has diverged and the run stops; otherwise the sender is faulty and leaves the pool. Throws
   * what the message loop counts as a rejected message.
   */
  private judgeNonFinite(member: Member, r: ReceivedResult, flight: StepInFlight, reproduced: boolean): never {
    if (reproduced) {
      flight.reject(new UserError(`training diverged at step ${r.step}: non-finite gradients for shard ${r.shard} (try a lower --lr)`));
      throw new Error(`non-finite gradient for shard ${r.shard} of step ${r.step}: the model diverged`);
    }
    this.lose(member, 'sent a non-finite gradient that recomputation does not reproduce', true);
    throw new Error(`non-finite gradient for shard ${r.shard} of step ${r.step}`);
  }

  /** What is wrong with a result for an assigned shard, or undefined when it is sound. */
  private checkResult(r: ReceivedResult, flight: StepInFlight): string | undefined {
    if (r.weightsVersion !== flight.step) return `computed on weights v${r.weightsVersion}, expected v${flight.step}`;
    const from = r.from ?? 0;
    const end = this.slots[r.shard].from;
    const length = r.gradSum.byteLength / 4;
    if (from + length !== end || from >= end) return `gradient part [${from}, ${from + length}), expected one ending at ${end}`;
    const expected = flight.shards[r.shard].labels.length;
    if (r.count !== expected) return `counts ${r.count} samples, the shard has ${expected}`;
    return undefined;
  }

  private finishIfComplete(): void {
    const flight = this.current;
    if (!flight || flight.remaining > 0) return;
    this.lastStepDoneAt = performance.now();
    reduceInShardOrder(this.slotBuffers, flight.shards.length, flight.gradSum);
    let lossSum = 0;
    let count = 0;
    for (let i = 0; i < flight.shards.length; i++) {
      lossSum += this.slots[i].lossSum;
      count += this.slots[i].count;
    }
    flight.resolve({ lossSum, count });
  }

  /** Heartbeats out, silence detection in. */
  private tick(): void {
    const now = Date.now();
    for (const m of [...this.members.values()]) {
      if (now - m.lastHeard > this.opts.workerTimeoutMs) this.lose(m, `silent for ${((now - m.lastHeard) / 1000).toFixed(1)} s`, true);
      else this.sendTo(m.id, { type: 'heartbeat', t: now });
    }
  }

  /** A worker is gone: its shards go to the others; a spawned one is replaced. */
  private lose(member: Member, reason: string, failure: boolean): void {
    if (!this.members.delete(member.id)) return;
    if (failure) this.failures++;
    this.opts.logger.warn({ worker: member.id, reason }, `lost worker ${member.id}: ${reason}`);
    if (member.child && member.child.exitCode === null && member.child.signalCode === null) member.child.kill('SIGKILL');
    const flight = this.current;
    if (flight) {
      for (const shard of member.pending) {
        if (this.slots[shard].done) continue;
        this.slots[shard].assignee = undefined;
        this.stats.reassigned++;
        this.assign(shard);
      }
    }
    member.pending.clear();
    if (member.child && !this.closing) {
      if (member.child.exitCode === null && member.child.signalCode === null) this.replaced.add(member.child);
      this.respawn(member.child);
    }
    this.armAllGoneTimer();
  }

  private armAllGoneTimer(): void {
    if (this.members.size > 0 || this.allGoneTimer || this.closing) return;
    const waitS = Math.round(this.opts.allGoneTimeoutMs / 1000);
    this.opts.logger.warn(`no worker left; waiting up to ${waitS} s for one to join ${this.endpoint}`);
    this.allGoneTimer = setTimeout(() => {
      this.allGoneTimer = undefined;
      if (this.members.size > 0) return;
      this.current?.reject(new UserError(`every worker is gone and none joined within ${waitS} s`));
    }, this.opts.allGoneTimeoutMs);
  }

  private spawnIndex = new Map<ChildProcess, number>();
  /** Children already declared lost and replaced: their exit must not count twice. */
  private readonly replaced = new Set<ChildProcess>();

  private spawnWorker(index: number): void {
    const args = [WORKER_SCRIPT, '--connect', this.endpoint.replace('0.0.0.0', '127.0.0.1')];
    if (this.opts.noCuda) args.push('--no-cuda');
    if (this.opts.engine && this.opts.engine !== 'auto') args.push('--engine', this.opts.engine);
    else if (this.opts.gpus > 0) args.push('--gpu', String(index % this.opts.gpus));
    if (this.opts.keysDir) args.push('--keys', this.opts.keysDir);
    args.push(...(this.opts.workerArgs ?? []));
    // Its own process group: a Ctrl-C at the terminal reaches the coordinator alone, which then
    // finishes the step, checkpoints and stops the workers itself.
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit', 'ipc'], detached: true });
    this.children.add(child);
    this.spawnIndex.set(child, index);
    child.stdout?.setEncoding('utf8').on('data', (text: string) => {
      for (const line of text.split('\n')) if (line.trim()) this.opts.logger.debug({ workerPid: child.pid }, line);
    });
    child.on('exit', (code, signal) => {
      this.children.delete(child);
      if (this.closing || this.replaced.delete(child)) return;
      const member = [...this.members.values()].find((m) => m.child === child);
      const how = signal ? `killed by ${signal}` : `exited with status ${code}`;
      if (member) this.lose(member, `process ${how}`, true);
      else {
        // Died before joining: count it and try again.
        this.failures++;
        this.opts.logger.warn(`worker process ${child.pid} ${how} before joining`);
        this.respawn(child);
      }
    });
  }

  private respawn(dead: ChildProcess): void {
    if (this.closing) return;
    const index = this.spawnIndex.get(dead) ?? 0;
    this.spawnIndex.delete(dead);
    if (this.restarts >= 3 * this.workers + 3) {
      this.opts.logger.error('too many worker restarts; not starting another');
      return;
    }
    this.restarts++;
    this.opts.logger.info(`starting a replacement worker (${this.restarts} restarts so far)`);
    this.spawnWorker(index);
  }

  private waitForMembers(n: number, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (this.members.size >= n) {
          clearTimeout(timer);
          resolve();
        } else this.joinWaiters.push(check);
      };
      const timer = setTimeout(() => {
        this.joinWaiters = this.joinWaiters.filter((w) => w !== check);
        reject(new UserError(`only ${this.members.size} of ${n} workers joined ${this.endpoint} within ${Math.round(timeoutMs / 1000)} s`));
      }, timeoutMs);
      check();
    });
  }

  private readonly killChildrenNow = (): void => {
    for (const c of this.children) c.kill('SIGKILL');
  };

  /** Tells every worker to stop, waits briefly for spawned ones, kills what is left. */
  async close(finished: boolean): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    clearInterval(this.heartbeatTimer);
    clearTimeout(this.allGoneTimer);
    const reason = finished ? 'training finished' : 'training stopped before the end';
    for (const m of this.members.values()) this.sendTo(m.id, { type: 'shutdown', reason, finished });
    // Every worker must get its shutdown, not only the first: let the queue drain and give
    // ZeroMQ a moment to put the messages on the wire before the socket goes.
    await this.sendQueue.drain();
    this.router.linger = 1000;
    const exits = [...this.children].map((c) => new Promise<void>((r) => (c.exitCode !== null || c.signalCode !== null ? r() : c.once('exit', () => r()))));
    const grace = new Promise<void>((r) => setTimeout(r, 3000).unref());
    await Promise.race([Promise.all(exits), grace]);
    for (const c of this.children) c.kill('SIGKILL');
    await Promise.all(exits);
    process.off('exit', this.killChildrenNow);
    this.router.close();
    this.zap?.close();
    await this.receiveLoop;
  }
}

function allFinite(a: Float32Array, from: number, end: number): boolean {
  for (let i = from; i < end; i++) if (!Number.isFinite(a[i])) return false;
  return true;
}
