/**
 * The coordinator's side of distributed training, as a hub over four parts: the ROUTER socket is
 * here, and every message is decoded here and routed to the part it concerns; what the parts decide
 * (admit this worker, this one is lost, this shard goes there, this result is in) the hub turns
 * into sends, evictions and replacements. It is a GradientSource, so the training loop does not
 * know whether gradients come from here or from its own process.
 *
 *   membership.ts  who is in the pool: hello, identity, liveness clock; says who is lost
 *   launcher.ts    the local worker processes: spawn, replace, stop; reports exits
 *   scheduler.ts   one step's plan: which member computes which shard, reassignment
 *   reducer.ts     results in: checks, shard slots, the shard-ordered sum, the non-finite verdict
 *   spot-check.ts  results in: which results are recomputed here (--verify-fraction), and the verdict
 *
 * The parts never call each other; only the hub calls them.
 *
 * Faults: a worker is lost when its process exits (spawned workers) or when it has been silent
 * for `workerTimeoutMs`. Its unfinished shards go to the others at once; a spawned worker is
 * started again; any worker that says hello later is put to work. A result counts only if it is
 * for the current step, from the worker that shard was assigned to, and well-formed; the first
 * valid result of a shard wins, so no shard is counted twice, and a later copy is ignored.
 *
 * Spot checks: with --verify-fraction P, each result that comes in is recomputed here with
 * probability P (drawn after it arrived) before its step completes. A result that does not match
 * puts its sender out of the run for good; the recomputation takes its place, and the sender's
 * other results of the step are computed again by others.
 */
import { availableParallelism } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { Router } from 'zeromq';
import type { EngineChoice } from '../engine/backend.js';
import type { ShardData } from '../training/gradients.js';
import type { AugmentOptions } from '../training/augment.js';
import type { BatchResult, DeviceDescription, GradientSource } from '../training/source.js';
import { UserError } from '../util/errors.js';
import { quantile } from '../util/quantile.js';
import { type CoordinatorKeys, identifyWorker, readAllowList } from '../protocol/keys.js';
import { ZAP_DOMAIN, type ZapHandler, startZapHandler } from './zap.js';
import type { Logger } from '../util/logger.js';
import type { GradDtype } from '../protocol/grad-dtype.js';
import {
  type CoordinatorMessage,
  type Hello,
  MAX_MESSAGE_BYTES,
  type ReceivedResult,
  SendQueue,
  type WeightsFrame,
  decodeWorkerMessage,
  encode,
  encodeAssign,
  encodeWeightsFrame,
  weightsFrameBytes,
} from '../protocol/messages.js';
import { Launcher, type Replacement, type SpawnFn } from './launcher.js';
import { messageLimitProblem } from './limits.js';
import { type Member, Membership, type RunIdentity, memberName } from './membership.js';
import { Reducer } from './reducer.js';
import { WeightsFrames } from './weights-frames.js';
import type { InProcessWorker } from './in-process-worker.js';
import { type Assignment, type DeadlinePolicy, Scheduler } from './scheduler.js';
import { type EngineIdentity, SpotChecker, bitExact, compareResults } from './spot-check.js';

export interface PoolOptions {
  /** Address to bind; `tcp://127.0.0.1:*` picks a free loopback port. */
  listen: string;
  /** Workers the run asks for. */
  workers: number;
  /**
   * --min-workers M: training starts once M of the `workers` have joined (the others are admitted
   * as they come), and a step waits while fewer than M are in the pool, up to `allGoneTimeoutMs`.
   * Absent: it starts once all of them have joined and goes on while any is left.
   */
  minWorkers?: number;
  /** What a worker's hello must match (its model digest; its engine and build when deterministic). */
  identity?: RunIdentity;
  /** Start the workers as child processes (else wait for them to connect). */
  spawn: boolean;
  /** GPUs to pin spawned workers to, round-robin (0 = none). */
  gpus: number;
  noCuda: boolean;
  /** --engine for spawned workers. */
  engine?: EngineChoice;
  model: string;
  params: number;
  /**
   * The most samples a shard of this run holds: with the weights, it sizes the largest message,
   * which must fit in the message limit (checked at start).
   */
  maxShardSamples?: number;
  /** Augmentation the workers apply (config.augment). */
  augment?: AugmentOptions;
  /**
   * The training set the coordinator samples from (data/mnist.ts trainDataIdentity): a worker whose
   * hello names the same set is sent sample indices instead of pixels. Absent: pixels to every worker.
   */
  trainData?: { count: number; digest: string };
  /** What weights and gradients travel as (--grad-dtype; default float32). */
  gradDtype?: GradDtype;
  logger: Logger;
  heartbeatMs?: number;
  /** A worker silent this long is declared lost. */
  workerTimeoutMs?: number;
  /** How long to wait for the expected workers at start. */
  connectTimeoutMs?: number;
  /** With no worker left (or fewer than `minWorkers`), how long to wait for more before giving up. */
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
  /** --verify-fraction: the probability (0..1) that a result is recomputed here and compared. */
  verifyFraction?: number;
  /** Computes a shard here for a spot check (pausing for the event loop: heartbeats go on). */
  recomputeShard?: (weights: Float32Array, shard: ShardData) => Promise<{ gradSum: Float32Array; lossSum: number }>;
  /** The coordinator's engine: a worker on the same one must match a recomputation bit for bit. */
  coordinatorEngine?: EngineIdentity;
  /** Starts the worker processes (child_process.spawn; tests give another). */
  spawnProcess?: SpawnFn;
  /**
   * --in-process-worker: one of the `workers` computes in this process (admitted at start; never
   * replaced), and `workers` − 1 are spawned or awaited.
   */
  inProcessWorker?: InProcessWorker;
  /**
   * Called once the socket is bound, before the workers join: from then on the pool's running
   * totals (`liveFigures`) can be read, e.g. by the Prometheus metrics while the pool fills.
   */
  onBound?: (pool: WorkerPool) => void;
}

/**
 * The hub's JavaScript heap is small (~17 MB) while every gradient it receives is a ZeroMQ frame
 * held outside it, as big as the model: V8 then starts incremental marking over and over, since
 * its old generation has less room left than its young one, and each marking ends in a full
 * collection. Without incremental marking a full collection waits until the heap is full. Measured
 * with 64 simulated workers, 100 steps of `net`: 74 full collections with incremental marking, 7
 * without; young collections 19 → 37 (cheap: a frame's handle dies young).
 */
function quietGarbageCollector(): void {
  setFlagsFromString('--no-incremental-marking');
}

/** The pool's running totals since it started, readable at any time. */
export interface PoolLiveFigures {
  workersExpected: number;
  workersConnected: number;
  /** Members a step needs to go out (--min-workers; 1 without it). */
  workersRequired: number;
  workerFailures: number;
  rejectedMessages: number;
  /** Spot checks made (--verify-fraction), and those that found a result false. */
  verifiedShards: number;
  rejectedByVerification: number;
  bytesSent: number;
  bytesReceived: number;
  /** Every measured step's fixed cost so far, in step order, ms (see PoolStats.step_overhead_ms). */
  stepOverheadsMs: readonly number[];
}

interface StepInFlight {
  step: number;
  weights: Float32Array;
  shards: ShardData[];
  /** Where the reduced gradient goes. */
  gradSum: Float32Array;
  /** Waiting for --min-workers members before its shards go out. */
  paused: boolean;
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
  /** Results for a step no longer in flight, and copies of a shard's result already in. */
  stale_results: number;
  reassigned_shards: number;
  /** Late shards given to a second worker as well (the first valid result wins). */
  backup_shards: number;
  /** Mean time a worker spent on one shard, from the assignment's arrival to its result. */
  worker_compute_ms_per_shard: number;
  /** The largest peak resident memory any worker reported, MB. */
  worker_peak_rss_mb: number;
  /** Connections refused by CURVE/ZAP (wrong or missing keys). */
  refused_connections: number;
  /**
   * The step's fixed cost: a step's wall time (from its start to the next step's, the update
   * included) minus the compute time of its slowest worker (the sum of that worker's shards), in ms;
   * every step but the first and the last. What no amount of faster compute would remove.
   */
  step_overhead_ms: { median: number; p90: number; steps: number };
  /** --verify-fraction: the probability a result was recomputed here. */
  verify_fraction: number;
  /** Results recomputed here and compared (spot checks). */
  verified_shards: number;
  /** Spot checks that found a result false (each put its sender out of the run). */
  rejected_by_verification: number;
  /** The coordinator's time per spot check: recomputing the shard and comparing, ms. */
  verify_ms_per_shard: number;
}

type Optional = 'keys' | 'keysDir' | 'workerArgs' | 'trainData' | 'verifyShard' | 'augment' | 'engine' | 'spawnProcess' | 'onBound' | 'minWorkers' | 'identity' | 'recomputeShard' | 'coordinatorEngine' | 'inProcessWorker';
type Options = Required<Omit<PoolOptions, Optional>> & Pick<PoolOptions, Optional>;

/** A step's weights as they travel: one frame, encoded once per step, whatever the number of assignments. */
interface TravellingWeights {
  flight: StepInFlight;
  frame: WeightsFrame;
}

/** Shards in a row that backups return first before their member leaves the pool. */
const STRIKES_TO_LEAVE = 3;
/** However slow the shards so far, a shard this late (ms) has its member given up on. */
const HARD_SHARD_TIMEOUT_FLOOR_MS = 120_000;

/** A hello this soon after a welcome to the same worker crossed the welcome on the way. */
const REPEATED_HELLO_GRACE_MS = 5000;
/** At most one "say hello again" per connection in this time (ms): a flood gets few answers. */
const REHELLO_INTERVAL_MS = 1000;
/** Connections remembered for the rehello rate limit before the stale ones are forgotten. */
const REHELLO_MEMORY = 1024;

export class WorkerPool implements GradientSource {
  readonly workers: number;
  /** Members training needs to start (summary.json's min_workers). */
  readonly minWorkers: number;
  /** Members a step needs to go out: --min-workers when given, else one. */
  private readonly keepAtLeast: number;
  /** Training has started: a first hello from now on is a late joiner. */
  private started = false;
  /** The pool stayed short past the empty-pool timeout while no step was in flight: the next one fails. */
  private gaveUp: Error | undefined;
  private readonly router: Router;
  private readonly sendQueue: SendQueue;
  private readonly opts: Options;
  private readonly membership: Membership;
  /** When each worker was last welcomed (a hello soon after is an echo, not a new start). */
  private readonly welcomedAt = new Map<string, number>();
  /** When each unknown connection was last asked to say hello again (see askForHello). */
  private readonly rehelloAt = new Map<string, number>();
  /** Connections sent a refusal: never asked to say hello again. */
  private readonly refusedIds = new Set<string>();
  private readonly scheduler = new Scheduler();
  private readonly reducer: Reducer;
  private launcher: Launcher | undefined;
  private failures = 0;
  private current: StepInFlight | undefined;
  private closing = false;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  /** Runs while the pool holds fewer members than a step needs (see armShortPoolTimer). */
  private shortPoolTimer: NodeJS.Timeout | undefined;
  private receiveLoop: Promise<void> | undefined;
  private joinWaiters: Array<() => void> = [];
  private zap: ZapHandler | undefined;
  private handshakeFailures = 0;
  private stats = { bytesSent: 0, bytesReceived: 0, steps: 0, coordinatorMs: 0, rejected: 0, stale: 0, reassigned: 0, backups: 0, workerPeakRss: 0, shardsComputed: 0, workerComputeMs: 0, verified: 0, verifyFailed: 0, verifyMs: 0 };
  private readonly spotChecker: SpotChecker;
  /** Spot checks run one after another (one engine); each waits for those before it. */
  private checks: Promise<void> = Promise.resolve();
  /** Spot checks of the current step not yet judged: the step waits for them. */
  private pendingChecks = 0;
  /** Per shard of the current step whose result is in: the member it came from. */
  private readonly completedBy = new Map<number, string>();
  /** Per member, shards in a row that a backup returned first. */
  private readonly strikes = new Map<string, number>();
  private readonly deadlines: DeadlinePolicy;
  private lastStepDoneAt: number | undefined;
  /** When the current step began, and each worker's compute time on it so far (step_overhead_ms). */
  private stepStartedAt: number | undefined;
  private readonly stepCompute = new Map<string, number>();
  private readonly stepOverheads: number[] = [];
  /** The current step's weights frame, in --grad-dtype. */
  private travelling: TravellingWeights | undefined;
  /** The buffers the weights travel in, reused once no worker may still be reading them. */
  private readonly weightsBuffers: WeightsFrames;
  /** The in-process worker's shards, computed one after another. */
  private inProcessWork: Promise<void> = Promise.resolve();
  endpoint = '';

  private constructor(opts: PoolOptions) {
    this.opts = {
      heartbeatMs: 500,
      workerTimeoutMs: 5000,
      connectTimeoutMs: 60000,
      allGoneTimeoutMs: 30000,
      maxShardSamples: 0,
      verifyFraction: 0,
      gradDtype: 'float32',
      ...opts,
    };
    this.spotChecker = new SpotChecker(this.opts.verifyFraction);
    this.weightsBuffers = new WeightsFrames(weightsFrameBytes(this.opts.params, this.opts.gradDtype));
    this.workers = opts.workers;
    this.minWorkers = opts.minWorkers ?? opts.workers;
    this.keepAtLeast = opts.minWorkers ?? 1;
    // Late: past 4 × the median round trip of recent shards, and never before --worker-timeout (a
    // first step, or a GPU's first shaders, has no history). Given up on: 10 × that, at least 2 min.
    this.deadlines = { floorMs: this.opts.workerTimeoutMs, factor: 4, hardFactor: 10, hardFloorMs: HARD_SHARD_TIMEOUT_FLOOR_MS };
    this.membership = new Membership(this.opts.workerTimeoutMs, opts.identity);
    this.reducer = new Reducer(opts.params, this.opts.gradDtype);
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
    // A message past the limit would make ZeroMQ drop the connection for good: say so now.
    const tooBig = messageLimitProblem(opts.model, opts.params, opts.maxShardSamples ?? 0);
    if (tooBig) throw new UserError(tooBig);
    quietGarbageCollector();
    const pool = new WorkerPool(opts);
    if (opts.keys) {
      const dir = opts.keys.dir;
      pool.zap = await startZapHandler(() => readAllowList(dir), opts.logger);
      pool.watchHandshakes();
    }
    try {
      await pool.router.bind(opts.listen);
    } catch (e) {
      pool.zap?.close();
      pool.router.close();
      throw new UserError(`cannot listen on ${opts.listen}: ${(e as Error).message}`);
    }
    pool.endpoint = pool.router.lastEndpoint ?? opts.listen;
    opts.onBound?.(pool);
    pool.receiveLoop = pool.receive();
    pool.heartbeatTimer = setInterval(() => pool.tick(), pool.opts.heartbeatMs);
    if (opts.inProcessWorker) {
      try {
        pool.admitInProcess(opts.inProcessWorker);
      } catch (e) {
        await pool.close(false);
        throw e;
      }
    }
    // The workers outside this process.
    const processes = opts.workers - (opts.inProcessWorker ? 1 : 0);
    if (opts.spawn) {
      const launcher = new Launcher({
        endpoint: pool.endpoint,
        workers: processes,
        gpus: opts.gpus,
        noCuda: opts.noCuda,
        engine: opts.engine,
        keysDir: opts.keysDir,
        workerArgs: opts.workerArgs,
        spawn: opts.spawnProcess,
        onExit: (local, pid, how) => pool.onChildExit(local, pid, how),
        onOutput: (pid, line) => opts.logger.debug({ workerPid: pid }, line),
      });
      pool.launcher = launcher;
      process.on('exit', launcher.killAllNow);
      // Worker i is pinned to GPU i mod G: the in-process worker, on this process's (first) GPU, is worker 0.
      const first = opts.workers - processes;
      for (let i = first; i < opts.workers; i++) launcher.start(i);
      const cores = availableParallelism();
      if (!opts.inProcessWorker && opts.gpus === 0 && processes >= cores) {
        opts.logger.info(`${processes} worker processes and this coordinator share ${cores} cores: --in-process-worker would compute one of the ${opts.workers} workers' shards here, with one process fewer`);
      }
    } else if (processes > 0) opts.logger.info(`waiting for ${processes} worker${processes === 1 ? '' : 's'} on ${pool.endpoint}`);
    try {
      await pool.waitForMembers(pool.minWorkers, pool.opts.connectTimeoutMs);
    } catch (e) {
      await pool.close(false);
      throw e;
    }
    pool.started = true;
    const size = pool.membership.size;
    if (size < opts.workers) {
      opts.logger.info(`starting with ${size} of ${opts.workers} workers (--min-workers ${pool.minWorkers}); the others are admitted as they join`);
    }
    return pool;
  }

  /** Takes the in-process worker into the pool, as the first member. */
  private admitInProcess(worker: InProcessWorker): void {
    const admission = this.membership.admit(worker.id, worker.hello, Date.now());
    if (admission.kind !== 'admitted') throw new UserError(`the in-process worker cannot take part: ${admission.kind === 'refused' ? admission.reason : 'its id is taken'}`);
    this.opts.logger.info(
      { worker: worker.id, backend: worker.hello.backend, device: worker.hello.device, engine: worker.hello.engine },
      `worker ${worker.id} joined (in this process: ${worker.hello.backend} on ${worker.hello.device}); ${this.membership.size} in the pool`,
    );
  }

  /**
   * Computes `shard` in this process, after the step's other assignments have gone out (the other
   * workers compute meanwhile), and takes its result in as a worker's. Shards given here while one
   * is computed wait their turn; one taken away meanwhile (a backup came first) is skipped.
   */
  private computeInProcess(shard: number, flight: StepInFlight): void {
    const worker = this.opts.inProcessWorker!;
    const stillOurs = (): Member | undefined => {
      const member = this.membership.get(worker.id);
      return this.current === flight && member && this.scheduler.holds(shard, worker.id) ? member : undefined;
    };
    this.inProcessWork = this.inProcessWork
      .then(() => new Promise<void>((resolve) => setImmediate(resolve)))
      .then(async () => {
        if (!stillOurs()) return;
        let result: ReceivedResult;
        try {
          result = await worker.compute(flight.step, shard, flight.weights, flight.shards[shard]);
        } catch (e) {
          flight.reject(e as Error); // this process's own engine failed: the run cannot go on as it is
          return;
        }
        const member = stillOurs();
        if (!member) return;
        this.membership.heard(worker.id, Date.now());
        try {
          await this.onResult(member, result);
        } catch (e) {
          this.countRejected(worker.id, e as Error);
        }
      });
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
    return this.membership.devices();
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
      backup_shards: this.stats.backups,
      // What a shard's gradient took on its worker (from its arrival to its result), against the
      // step's wall time: the rest is communication and the coordinator's share.
      worker_compute_ms_per_shard: this.stats.shardsComputed ? this.stats.workerComputeMs / this.stats.shardsComputed : 0,
      worker_peak_rss_mb: this.stats.workerPeakRss / 2 ** 20,
      refused_connections: this.refusedConnections(),
      step_overhead_ms: { median: quantile(this.stepOverheads, 0.5), p90: quantile(this.stepOverheads, 0.9), steps: this.stepOverheads.length },
      verify_fraction: this.opts.verifyFraction,
      verified_shards: this.stats.verified,
      rejected_by_verification: this.stats.verifyFailed,
      verify_ms_per_shard: this.stats.verified ? this.stats.verifyMs / this.stats.verified : 0,
    };
  }

  /** The running totals as they are now (cheap: the Prometheus metrics read them on every scrape). */
  liveFigures(): PoolLiveFigures {
    return {
      workersExpected: this.workers,
      workersConnected: this.membership.size,
      workersRequired: this.keepAtLeast,
      workerFailures: this.failures,
      rejectedMessages: this.stats.rejected,
      verifiedShards: this.stats.verified,
      rejectedByVerification: this.stats.verifyFailed,
      bytesSent: this.stats.bytesSent,
      bytesReceived: this.stats.bytesReceived,
      stepOverheadsMs: this.stepOverheads,
    };
  }

  computeBatch(step: number, weights: Float32Array, shards: ShardData[], gradSum: Float32Array): Promise<BatchResult> {
    if (this.current) return Promise.reject(new Error('a step is already in flight'));
    return new Promise<BatchResult>((resolve, reject) => {
      if (this.gaveUp) {
        reject(this.gaveUp);
        return;
      }
      const flight: StepInFlight = {
        step,
        weights,
        shards,
        gradSum,
        paused: false,
        resolve: (r) => {
          this.current = undefined;
          resolve(r);
        },
        reject: (e) => {
          this.current = undefined;
          reject(e);
        },
      };
      const now = performance.now();
      // The step before this one ends here; the first is left out (it also carries start-up).
      if (this.stepStartedAt !== undefined && this.stats.steps > 1) {
        this.stepOverheads.push(now - this.stepStartedAt - Math.max(0, ...this.stepCompute.values()));
      }
      this.stepStartedAt = now;
      this.stepCompute.clear();
      this.completedBy.clear();
      this.pendingChecks = 0;
      this.reducer.begin(step, shards);
      this.scheduler.begin(step, shards.length);
      this.opts.inProcessWorker?.beginStep();
      this.current = flight;
      this.stats.steps++;
      if (this.membership.size < this.keepAtLeast) {
        // Too few members (--min-workers): the step waits for more, within the empty-pool timeout.
        flight.paused = true;
        this.armShortPoolTimer();
      } else for (let shard = 0; shard < shards.length; shard++) this.assign(shard);
      if (this.lastStepDoneAt !== undefined) this.stats.coordinatorMs += performance.now() - this.lastStepDoneAt;
      this.finishIfComplete();
    });
  }

  /** Gives `shard` of the current step to the member the scheduler picks (or leaves it for a later joiner). */
  private assign(shard: number): void {
    const flight = this.current;
    if (!flight || flight.paused) return;
    this.reducer.reopen(shard); // parts from an earlier assignee do not count
    const a = this.scheduler.assign(shard, this.membership.all());
    if (!a) return; // no worker now: a joiner takes it (see onHello), or the all-gone timer fires
    this.sendAssignment(a);
  }

  private sendAssignment(a: Assignment): void {
    const flight = this.current;
    if (!flight) return;
    if (a.member === this.opts.inProcessWorker?.id) {
      this.computeInProcess(a.shard, flight);
      return;
    }
    const data = flight.shards[a.shard];
    // A worker that holds the run's training set gathers the samples itself: 4 bytes a sample
    // instead of 785, and no pixels gathered here.
    const samples = data.indices && this.holdsTrainSet(a.member) ? { indices: data.indices } : { pixels: data.pixels, labels: data.labels };
    const header = { type: 'assign', step: flight.step, shard: a.shard, weightsVersion: flight.step, ...samples, keys: data.keys } as const;
    const weights = a.withWeights ? this.weightsFrame(flight) : undefined;
    if (weights) this.weightsBuffers.sent(weights.bytes, a.member);
    this.sendFrames(a.member, encodeAssign(header, weights));
  }

  /** Whether `id`'s hello named the training set this coordinator samples from. */
  private holdsTrainSet(id: string): boolean {
    const theirs = this.membership.get(id)?.hello.trainData;
    const ours = this.opts.trainData;
    return theirs !== undefined && ours !== undefined && theirs.digest === ours.digest && theirs.count === ours.count;
  }

  /** The step's weights frame, encoded at its first assignment that carries them, and shared by all. */
  private weightsFrame(flight: StepInFlight): WeightsFrame {
    if (this.travelling?.flight !== flight) {
      const into = this.weightsBuffers.take(flight.step);
      this.travelling = { flight, frame: encodeWeightsFrame(flight.weights, this.opts.gradDtype, into) };
    }
    return this.travelling.frame;
  }

  private sendTo(id: string, message: CoordinatorMessage): void {
    if (message.type === 'reject') this.refusedIds.add(id);
    this.sendFrames(id, [encode(message)]);
  }

  private sendFrames(id: string, frames: Buffer[]): void {
    if (id === this.opts.inProcessWorker?.id) return; // heartbeats, shutdown: nothing to tell it
    for (const frame of frames) this.stats.bytesSent += frame.length;
    this.sendQueue.send([id, ...frames]).catch((e) => this.opts.logger.debug(`send to ${id} failed: ${(e as Error).message}`));
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
        // A non-finite result's recomputation: its verdict comes before the next message is read,
        // so that a sender's later messages are judged knowing it (it never rejects).
        const verdict = this.dispatch(id, body);
        if (verdict) await verdict;
      } catch (e) {
        this.countRejected(id, e as Error);
      }
    }
  }

  /** Counts and logs a message that was not applied. */
  private countRejected(id: string, e: Error): void {
    this.stats.rejected++;
    this.opts.logger.warn({ worker: id }, `rejected a message from ${id.slice(0, 60)}: ${e.message}`);
  }

  /** Acts on one message; returns the verdict still to come on a non-finite result. */
  private dispatch(id: string, body: Buffer): Promise<void> | undefined {
    if (id === this.opts.inProcessWorker?.id) throw new Error('a connection uses the in-process worker\'s id');
    const msg = decodeWorkerMessage(body);
    const member = this.membership.heard(id, Date.now());
    switch (msg.type) {
      case 'hello':
        this.onHello(id, msg);
        return;
      case 'result':
        if (!member) {
          this.askForHello(id);
          throw new Error('result from a worker that has not joined');
        }
        return this.onResult(member, msg);
      case 'heartbeat':
        if (!member) this.askForHello(id);
        if (typeof msg.peakRss === 'number' && msg.peakRss > this.stats.workerPeakRss) this.stats.workerPeakRss = msg.peakRss;
        return;
      case 'bye':
        if (member) this.lose(member, `left: ${msg.reason}`, true);
        return;
    }
  }

  /**
   * A worker this coordinator does not know (it dropped it, or it was restarted since) still
   * beats or sends results: asked to say hello again, it rejoins now rather than after its own
   * silence timeout. Once a second per connection at most; never one refused or put out of the run.
   */
  private askForHello(id: string): void {
    if (this.closing || this.refusedIds.has(id) || this.membership.isBanned(id)) return;
    const now = Date.now();
    if (now - (this.rehelloAt.get(id) ?? -Infinity) < REHELLO_INTERVAL_MS) return;
    if (this.rehelloAt.size >= REHELLO_MEMORY) {
      for (const [known, at] of this.rehelloAt) if (now - at >= REHELLO_INTERVAL_MS) this.rehelloAt.delete(known);
    }
    this.rehelloAt.set(id, now);
    this.opts.logger.info({ worker: id }, `asked ${id.slice(0, 60)}, not in the pool, to say hello again`);
    this.sendTo(id, { type: 'rehello', reason: 'this coordinator does not know this worker: say hello again' });
  }

  private onHello(id: string, hello: Hello): void {
    // A spawned child is known by the secret it was given, not by the pid it claims.
    const local = this.launcher?.identify(hello.secret);
    // With --keys, a worker with its own pair is known by its key's name, which its hello proves.
    const identity = this.opts.keys ? identifyWorker(this.opts.keys, hello, id) : {};
    if ('refused' in identity) {
      this.sendTo(id, { type: 'reject', reason: identity.refused });
      throw new Error(`refused worker ${id}: ${identity.refused}`);
    }
    let admission = this.membership.admit(id, hello, Date.now(), local, identity.keyName);
    if (admission.kind === 'refused') {
      this.sendTo(id, { type: 'reject', reason: admission.reason, ...(admission.putOut ? { putOut: true } : {}) });
      throw new Error(admission.error);
    }
    if (admission.kind === 'repeated') {
      // A hello soon after the welcome crossed it on the way: nothing changes.
      if (Date.now() - (this.welcomedAt.get(id) ?? 0) < REPEATED_HELLO_GRACE_MS) return;
      // Later, the worker heard nothing from this coordinator for its timeout and starts over: it
      // holds no weights and has dropped its assignments. It is taken in afresh, its open shards
      // go back to the pool (it may get them again), and it keeps its place as the same process.
      this.opts.logger.warn({ worker: id }, `worker ${id} said hello again (it lost track of this coordinator): taking it in afresh`);
      this.membership.remove(admission.member);
      this.weightsBuffers.left(id);
      this.scheduler.release(id);
      admission = this.membership.admit(id, hello, Date.now(), admission.member.local ?? local, identity.keyName);
      if (admission.kind !== 'admitted') return;
    }
    const { member, differs } = admission;
    // A first hello since training started: a worker --min-workers did not wait for (or a replacement).
    const late = this.started && !this.welcomedAt.has(id);
    this.welcomedAt.set(id, Date.now());
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
      streamGradients: member.local === undefined,
      ...(this.opts.gradDtype !== 'float32' ? { gradDtype: this.opts.gradDtype } : {}),
    });
    this.opts.logger.info(
      { worker: memberName(member), routingId: id, backend: hello.backend, device: hello.device, engine: hello.engine, build: hello.build },
      `worker ${memberName(member)} joined${late ? ' late' : ''} (${hello.backend} on ${hello.device}; ${this.holdsTrainSet(id) ? 'holds the training set: sent sample indices' : 'sent pixels'}); ${this.membership.size} in the pool`,
    );
    if (differs.length > 0) {
      this.opts.logger.warn({ worker: id, differs }, `worker ${id} admitted although its ${differs.join('; its ')} (mixed engines or builds: the weights are not bit-reproducible)`);
    }
    const flight = this.current;
    if (this.membership.size >= this.keepAtLeast) {
      clearTimeout(this.shortPoolTimer);
      this.shortPoolTimer = undefined;
      this.gaveUp = undefined;
      if (flight?.paused) {
        flight.paused = false;
        this.opts.logger.info(`${this.membership.size} workers in the pool again: training goes on`);
        for (let shard = 0; shard < flight.shards.length; shard++) this.assign(shard);
      }
    }
    // Shards that found no worker wait for this one.
    if (flight && !flight.paused) for (const shard of this.scheduler.unassigned()) this.assign(shard);
    this.joinWaiters.splice(0).forEach((w) => w());
  }

  private onResult(member: Member, r: ReceivedResult): Promise<void> | undefined {
    // Whatever becomes of it, it says the weights sent for its step have reached this worker.
    this.weightsBuffers.answered(member.id, r.step);
    const flight = this.current;
    if (!flight || r.step !== flight.step) {
      this.stats.stale++;
      return;
    }
    if (r.shard >= flight.shards.length || !this.scheduler.holds(r.shard, member.id)) {
      throw new Error(`result for shard ${r.shard} of step ${r.step}, which is not assigned to this worker`);
    }
    const verdict = this.reducer.accept(r);
    switch (verdict.kind) {
      case 'duplicate':
        // The first valid result won; a copy (a retry, a replay) says nothing against its sender.
        this.stats.stale++;
        return;
      case 'invalid':
        // A worker that returns a broken result for its own shard cannot be trusted with more:
        // it leaves the pool, and its shards (this one included) go to the others.
        this.lose(member, `sent an invalid result (${verdict.problem})`, true);
        throw new Error(`invalid result for shard ${r.shard} of step ${r.step}: ${verdict.problem}`);
      case 'verify':
        return this.verify(member, r, flight);
      case 'part':
        return;
      case 'complete':
        this.strikes.delete(member.id);
        this.strike(this.scheduler.complete(r.shard, member.id));
        this.stats.shardsComputed++;
        this.stats.workerComputeMs += r.computeMs;
        this.stepCompute.set(member.id, (this.stepCompute.get(member.id) ?? 0) + r.computeMs);
        this.completedBy.set(r.shard, member.id);
        // Drawn now that the result is in: nothing the worker saw before sending it says whether it is checked.
        // The in-process worker's results are not: they were computed here already.
        if (member.id !== this.opts.inProcessWorker?.id && this.spotChecker.draw()) this.spotCheck(member, r.shard, flight);
        this.finishIfComplete();
        return;
    }
  }

  /**
   * A non-finite gradient: the shard is recomputed here (perhaps on a GPU, so the verdict comes
   * later; the shard stays with its member until then). Reproduced, the model has diverged and the
   * run stops; not reproduced, the sender is faulty and leaves the pool. Returns the verdict to
   * come, which never rejects.
   */
  private verify(member: Member, r: ReceivedResult, flight: StepInFlight): Promise<void> | undefined {
    /** Throws what the message loop counts as a rejected message. */
    const act = (reproduced: boolean): never => {
      const judgement = this.reducer.judge(r.step, r.shard, reproduced);
      if (judgement.kind === 'diverged') {
        flight.reject(new UserError(judgement.message));
        throw new Error(judgement.error);
      }
      this.lose(member, judgement.reason, true);
      throw new Error(judgement.error);
    };
    if (!this.opts.verifyShard) return act(false);
    return this.opts.verifyShard(flight.weights, flight.shards[r.shard]).then(
      (reproduced) => {
        try {
          if (this.current === flight && this.membership.has(member)) act(reproduced);
        } catch (e) {
          this.countRejected(member.id, e as Error);
        }
      },
      (e: Error) => flight.reject(e),
    );
  }

  /**
   * Recomputes `shard` here, after the spot checks before it, and compares it with what `member`
   * sent; the step waits for the verdict. The sent result is copied now: its slot may be retracted
   * and filled again before the recomputation is done.
   */
  private spotCheck(member: Member, shard: number, flight: StepInFlight): void {
    const recompute = this.opts.recomputeShard;
    if (!recompute) return;
    const inSlot = this.reducer.result(shard);
    const sent = { gradSum: Float32Array.from(inSlot.gradSum), lossSum: inSlot.lossSum };
    const exact = this.opts.coordinatorEngine ? bitExact(this.opts.coordinatorEngine, member.hello) : false;
    this.pendingChecks++;
    this.checks = this.checks
      .then(async () => {
        if (this.current !== flight) return;
        const started = performance.now();
        const recomputed = await recompute(flight.weights, flight.shards[shard]);
        const verdict = compareResults(sent, recomputed, exact);
        this.stats.verifyMs += performance.now() - started;
        this.stats.verified++;
        // Retracted meanwhile (its sender was caught on another shard): another member computes it.
        if (this.current !== flight || this.completedBy.get(shard) !== member.id) return;
        if (!verdict.match) this.caughtLying(member, shard, recomputed, verdict.detail);
      })
      .catch((e: Error) => flight.reject(e))
      .finally(() => {
        if (this.current !== flight) return;
        this.pendingChecks--;
        this.finishIfComplete();
      });
  }

  /**
   * A spot check found `member`'s result for `shard` false: the recomputation takes its place, the
   * member leaves the run and may not rejoin it (its routing id and its key's name), and its other
   * results of the step are computed again by others.
   */
  private caughtLying(member: Member, shard: number, recomputed: { gradSum: Float32Array; lossSum: number }, detail: string): void {
    const flight = this.current;
    if (!flight) return;
    this.stats.verifyFailed++;
    this.reducer.replace(shard, recomputed.gradSum, recomputed.lossSum);
    this.completedBy.delete(shard);
    this.membership.ban(member);
    const reason = `its result for shard ${shard} of step ${flight.step} failed a spot check (${detail})`;
    if (this.membership.has(member)) {
      this.sendTo(member.id, { type: 'reject', reason: `put out of the run: ${reason}`, putOut: true });
      this.lose(member, reason, true);
    } else this.opts.logger.warn({ worker: memberName(member), reason }, `worker ${memberName(member)}, already gone: ${reason}`);
    for (const [other, by] of [...this.completedBy]) {
      if (by !== member.id) continue;
      this.completedBy.delete(other);
      this.reducer.retract(other);
      this.scheduler.reopen(other);
      this.stats.reassigned++;
      this.assign(other);
    }
  }

  private finishIfComplete(): void {
    const flight = this.current;
    if (!flight || this.reducer.outstanding > 0 || this.pendingChecks > 0) return;
    this.lastStepDoneAt = performance.now();
    flight.resolve(this.reducer.reduce(flight.gradSum));
  }

  /**
   * A member whose shard a backup returned first: after STRIKES_TO_LEAVE in a row (no shard of its
   * own returned first in between) it leaves the pool, a healthy but slow one included.
   */
  private strike(beaten: string | undefined): void {
    if (beaten === undefined) return;
    const strikes = (this.strikes.get(beaten) ?? 0) + 1;
    this.strikes.set(beaten, strikes);
    const member = this.membership.get(beaten);
    if (member && strikes >= STRIKES_TO_LEAVE) this.lose(member, `${strikes} of its shards in a row came back first from backups`, true);
  }

  /** Late shards: a backup for each past its deadline; members past the hard limit given up on. */
  private checkDeadlines(now: number): void {
    if (!this.current) return;
    for (const late of this.scheduler.late(now, this.deadlines)) {
      if (late.kind === 'give-up') {
        const member = this.membership.get(late.member);
        if (member) this.lose(member, `shard ${late.shard} not back after ${(late.lateMs / 1000).toFixed(1)} s`, true);
        continue;
      }
      const a = this.scheduler.assignBackup(late.shard, this.membership.all());
      if (!a) continue; // no other member: the hard limit decides
      this.stats.backups++;
      this.opts.logger.debug({ shard: late.shard, primary: late.primary, backup: a.member }, `shard ${late.shard} is late on ${late.primary}: ${a.member} computes it too`);
      this.sendAssignment(a);
    }
  }

  /** Heartbeats out, silence detection in, late shards. */
  private tick(): void {
    const now = Date.now();
    // The in-process worker is as alive as this process; a step it computes holds this tick back.
    if (this.opts.inProcessWorker) this.membership.heard(this.opts.inProcessWorker.id, now);
    this.checkDeadlines(now);
    this.dropRevoked();
    const silent = new Map(this.membership.silent(now).map((s) => [s.member, s.reason]));
    for (const m of [...this.membership.all()]) {
      const reason = silent.get(m);
      if (reason) this.lose(m, reason, true);
      else this.sendTo(m.id, { type: 'heartbeat', t: now });
    }
  }

  /**
   * Members whose own key has been taken off the allow-list (allowed/NAME.public removed) leave at
   * once: checked every heartbeat interval, so a revoked worker is dropped within one.
   */
  private dropRevoked(): void {
    const dir = this.opts.keys?.dir;
    if (!dir) return;
    let named = false;
    for (const m of this.membership.all()) named ||= m.keyName !== undefined;
    if (!named) return;
    const admitted = new Set(readAllowList(dir).values());
    for (const m of [...this.membership.all()]) {
      if (m.keyName === undefined || admitted.has(m.keyName)) continue;
      this.sendTo(m.id, { type: 'reject', reason: `its key ${m.keyName} was revoked`, putOut: true });
      this.lose(m, `its key ${m.keyName} was revoked`, true);
    }
  }

  /** A worker is gone: its shards go to the others; a spawned one is replaced. */
  private lose(member: Member, reason: string, failure: boolean): void {
    if (!this.membership.remove(member)) return;
    this.weightsBuffers.left(member.id);
    if (failure) this.failures++;
    this.opts.logger.warn({ worker: memberName(member), reason }, `lost worker ${memberName(member)}: ${reason}`);
    const open = this.scheduler.release(member.id);
    if (this.current) {
      for (const shard of open) {
        this.stats.reassigned++;
        this.assign(shard);
      }
    }
    if (member.local !== undefined && this.launcher) this.logReplacement(this.launcher.replace(member.local));
    this.armShortPoolTimer();
  }

  /** A spawned worker exited without being asked to. */
  private onChildExit(local: number, pid: number | undefined, how: string): void {
    const member = this.membership.byLocal(local);
    if (member) {
      this.lose(member, `process ${how}`, true);
      return;
    }
    // Died before joining: count it and try again.
    this.failures++;
    this.opts.logger.warn(`worker process ${pid} ${how} before joining`);
    if (this.launcher) this.logReplacement(this.launcher.replace(local));
  }

  private logReplacement(r: Replacement): void {
    if (r.kind === 'refused') this.opts.logger.error(r.reason);
    else if (r.kind === 'started') this.opts.logger.info(`starting a replacement worker (${r.restarts} restarts so far)`);
  }

  /**
   * With fewer members than a step needs (none; or fewer than --min-workers), waits up to
   * --empty-pool-timeout for more; then the step in flight, or else the next one, fails with one
   * line (the training loop checkpoints the state before it).
   */
  private armShortPoolTimer(): void {
    if (this.membership.size >= this.keepAtLeast || this.shortPoolTimer || this.closing) return;
    const waitS = Math.round(this.opts.allGoneTimeoutMs / 1000);
    const size = this.membership.size;
    if (size === 0) this.opts.logger.warn(`no worker left; waiting up to ${waitS} s for one to join ${this.endpoint}`);
    else this.opts.logger.warn(`${size} of ${this.workers} workers in the pool, fewer than --min-workers ${this.keepAtLeast}: steps wait up to ${waitS} s for more to join ${this.endpoint}`);
    this.shortPoolTimer = setTimeout(() => {
      this.shortPoolTimer = undefined;
      const now = this.membership.size;
      if (now >= this.keepAtLeast) return;
      const error = new UserError(
        now === 0
          ? `every worker is gone and none joined within ${waitS} s`
          : `only ${now} of the --min-workers ${this.keepAtLeast} workers in the pool, and no more joined within ${waitS} s`,
      );
      if (this.current) this.current.reject(error);
      else this.gaveUp = error;
    }, this.opts.allGoneTimeoutMs);
  }

  private waitForMembers(n: number, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (this.membership.size >= n) {
          clearTimeout(timer);
          resolve();
        } else this.joinWaiters.push(check);
      };
      const timer = setTimeout(() => {
        this.joinWaiters = this.joinWaiters.filter((w) => w !== check);
        reject(new UserError(`only ${this.membership.size} of ${n} workers joined ${this.endpoint} within ${Math.round(timeoutMs / 1000)} s`));
      }, timeoutMs);
      check();
    });
  }

  /** Tells every worker to stop, waits briefly for spawned ones, kills what is left. */
  async close(finished: boolean): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.launcher?.beginClose();
    clearInterval(this.heartbeatTimer);
    clearTimeout(this.shortPoolTimer);
    const reason = finished ? 'training finished' : 'training stopped before the end';
    for (const m of this.membership.all()) this.sendTo(m.id, { type: 'shutdown', reason, finished });
    // Every worker must get its shutdown, not only the first: let the queue drain and give
    // ZeroMQ a moment to put the messages on the wire before the socket goes.
    await this.sendQueue.drain();
    this.router.linger = 1000;
    if (this.launcher) {
      await this.launcher.stop(3000);
      process.off('exit', this.launcher.killAllNow);
    }
    this.router.close();
    this.zap?.close();
    await this.receiveLoop;
  }
}
