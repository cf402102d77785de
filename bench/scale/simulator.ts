/**
 * Simulated workers for `npm run bench:scale`: many DEALER sockets in this one process, each speaking
 * the real worker protocol (src/protocol/messages.ts: the same encoders and decoders) to a real
 * coordinator over real ZeroMQ sockets. Each one says hello, is welcomed, sends heartbeats, and answers
 * every assignment after a fixed "compute" time with a fixed gradient of the model's size. The
 * compute is a timer, so a simulated worker burns no CPU while it "computes": what the coordinator
 * does per step, per worker and per byte is all that is measured.
 *
 * Like a real worker that joined from elsewhere (the coordinator tells it so in the welcome), a
 * simulated worker sends a shard's gradient in two parts when asked to stream: the tail half at half
 * the compute time, the rest at the end.
 */
import { hostname } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { Dealer } from 'zeromq';
import {
  MAX_MESSAGE_BYTES,
  PROTOCOL_VERSION,
  type ReceivedAssign,
  SendQueue,
  type WorkerMessage,
  assignedSamples,
  decodeCoordinatorMessage,
  encode,
} from '../../src/protocol/messages.js';
import { loadTrainSplit, trainDataIdentity } from '../../src/data/mnist.js';
import { type GradDtype, bytesPerElement, encodeTensor } from '../../src/protocol/grad-dtype.js';
import { modelDigests } from '../../src/models/index.js';
import { buildId } from '../../src/util/build.js';

export interface SimulatorOptions {
  /** The coordinator's address, e.g. tcp://127.0.0.1:5555. */
  endpoint: string;
  workers: number;
  /** The fixed time a shard "computes", ms. */
  computeMs: number;
  /**
   * Say in the hello that they hold the bundled MNIST training set, as a real worker does, so that
   * the coordinator sends sample indices (default); false: it sends pixels and labels.
   */
  holdTrainSet?: boolean;
  /** Called when the first assignment of a step reaches any simulated worker, before it is handled. */
  onStepStart?: (step: number) => void;
}

/** What the simulated workers saw of one step. */
export interface StepRecord {
  /** When its first assignment arrived (performance.now(), ms). */
  firstAssignAt: number;
  /** When its last result was handed to ZeroMQ. */
  lastResultAt: number;
  /** The longest one worker spent on its shards of the step (arrival to result), ms. */
  maxComputeMs: number;
  shards: number;
}

interface SimulatedWorker {
  id: string;
  socket: Dealer;
  queue: SendQueue;
  welcomed: boolean;
  /** When this worker's earlier shards are "done": a worker computes its shards one after another. */
  busyUntil: number;
  /** Per step, the time spent on its shards so far. */
  computeOfStep: Map<number, number>;
}

/** A gradient's value: small, finite, the same for every entry and every shard. */
const GRADIENT_VALUE = 1e-4;
/** Loss per sample reported with each shard: that of an untrained 10-class model (ln 10). */
const LOSS_PER_SAMPLE = Math.LN10;

export class SimulatedWorkers {
  private readonly workers: SimulatedWorker[] = [];
  private readonly steps = new Map<number, StepRecord>();
  /** The fixed gradient, as it travels (--grad-dtype: 16-bit patterns for float16 and bfloat16). */
  private gradient: Float32Array | Uint16Array = new Float32Array(0);
  private gradDtype: GradDtype = 'float32';
  private streamGradients = false;
  private heartbeat: NodeJS.Timeout | undefined;
  private closed = 0;
  private welcomedCount = 0;
  private resolveDone!: () => void;
  private rejectAll!: (e: Error) => void;
  private resolveJoined!: () => void;
  /** Resolves when every simulated worker has been told to shut down (or rejects on a refusal). */
  readonly done: Promise<void>;
  /** Resolves when every simulated worker has been welcomed. */
  readonly joined: Promise<void>;
  /** The first thing that went wrong (a reject, a malformed assignment), if anything did. */
  error: Error | undefined;

  private constructor(private readonly opts: SimulatorOptions) {
    this.done = new Promise((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectAll = reject;
    });
    this.joined = new Promise((resolve) => (this.resolveJoined = resolve));
    // Whoever awaits only `joined` must not see an unhandled rejection of `done`.
    this.done.catch(() => {});
  }

  /** Connects every simulated worker and says hello; the coordinator may start before or after. */
  static start(opts: SimulatorOptions): SimulatedWorkers {
    // Many workers' weights frames, held outside a small heap: without this, V8 marks the heap over
    // and over, as in the coordinator (see quietGarbageCollector in src/coordinator/pool.ts). At 64
    // workers the simulator's garbage collection took half of its CPU.
    setFlagsFromString('--no-incremental-marking');
    const sim = new SimulatedWorkers(opts);
    // This checkout's build and model digests, as a real worker of it would say: the coordinator
    // refuses a worker that computes another model. The engine names what it is: the coordinator
    // admits it with a warning (mixed engines), or refuses it in --deterministic mode.
    const identity = {
      build: buildId(),
      engine: `simulated (a ${opts.computeMs} ms timer)`,
      models: modelDigests(),
      ...(opts.holdTrainSet === false ? {} : { trainData: trainDataIdentity(loadTrainSplit()) }),
    };
    for (let i = 0; i < opts.workers; i++) {
      const id = `sim-${process.pid}-${i}`;
      const socket = new Dealer({ routingId: id, linger: 0, maxMessageSize: MAX_MESSAGE_BYTES });
      const worker: SimulatedWorker = {
        id,
        socket,
        queue: new SendQueue((frames) => socket.send(frames)),
        welcomed: false,
        busyUntil: 0,
        computeOfStep: new Map(),
      };
      sim.workers.push(worker);
      socket.connect(opts.endpoint);
      // A DEALER's send waits for a connection: the hello goes as soon as the coordinator is up.
      sim.send(worker, {
        type: 'hello',
        protocol: PROTOCOL_VERSION,
        workerId: id,
        pid: process.pid,
        host: hostname(),
        backend: 'simulated',
        device: `a ${opts.computeMs} ms timer per shard`,
        ...identity,
      });
      void sim.serve(worker);
    }
    return sim;
  }

  /** Whether the coordinator asked for each result in two parts (the welcome's streamGradients). */
  get streamsGradients(): boolean {
    return this.streamGradients;
  }

  /** Per step, what the simulated workers saw of it. */
  stepRecords(): ReadonlyMap<number, StepRecord> {
    return this.steps;
  }

  /** Closes every socket (the coordinator has gone, or the bench gives up). */
  close(): void {
    clearInterval(this.heartbeat);
    for (const w of this.workers) if (!w.socket.closed) w.socket.close();
  }

  private send(worker: SimulatedWorker, message: WorkerMessage): void {
    this.sendFrame(worker, encode(message));
  }

  private sendFrame(worker: SimulatedWorker, frame: Buffer): void {
    if (worker.socket.closed) return;
    worker.queue.send([frame]).catch(() => {}); // a socket closed meanwhile: nothing to tell
  }

  private fail(e: Error): void {
    this.error ??= e;
    this.close();
    this.rejectAll(e);
  }

  private async serve(worker: SimulatedWorker): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await worker.socket.receive();
      } catch (e) {
        if (!worker.socket.closed) this.fail(e as Error);
        break;
      }
      let msg: ReturnType<typeof decodeCoordinatorMessage>;
      try {
        msg = decodeCoordinatorMessage(frames);
      } catch (e) {
        this.fail(new Error(`simulated worker ${worker.id}: bad message from the coordinator: ${(e as Error).message}`));
        break;
      }
      switch (msg.type) {
        case 'welcome':
          this.onWelcome(worker, msg.params, msg.heartbeatMs, msg.streamGradients === true, msg.gradDtype ?? 'float32');
          break;
        case 'reject':
          this.fail(new Error(`the coordinator refused simulated worker ${worker.id}: ${msg.reason}`));
          break;
        case 'assign':
          this.onAssign(worker, msg);
          break;
        case 'heartbeat':
          break;
        case 'shutdown':
          worker.socket.close();
          break;
      }
      if (worker.socket.closed) break;
    }
    if (++this.closed === this.workers.length) {
      clearInterval(this.heartbeat);
      this.resolveDone();
    }
  }

  private onWelcome(worker: SimulatedWorker, params: number, heartbeatMs: number, stream: boolean, dtype: GradDtype): void {
    if (worker.welcomed) return;
    worker.welcomed = true;
    if (this.gradient.length !== params || this.gradDtype !== dtype) {
      // As a real worker does: the gradient in the run's dtype (--grad-dtype), which the welcome names.
      this.gradient = encodeTensor(new Float32Array(params).fill(GRADIENT_VALUE), dtype);
      this.gradDtype = dtype;
    }
    this.streamGradients = stream;
    // One timer for all: the same heartbeat, encoded once per beat, goes to every welcomed worker.
    this.heartbeat ??= setInterval(() => {
      const frame = encode({ type: 'heartbeat', t: Date.now() });
      for (const w of this.workers) if (w.welcomed) this.sendFrame(w, frame);
    }, heartbeatMs);
    if (++this.welcomedCount === this.workers.length) this.resolveJoined();
  }

  private onAssign(worker: SimulatedWorker, m: ReceivedAssign): void {
    const arrived = performance.now();
    let record = this.steps.get(m.step);
    if (!record) {
      this.opts.onStepStart?.(m.step);
      record = { firstAssignAt: arrived, lastResultAt: arrived, maxComputeMs: 0, shards: 0 };
      this.steps.set(m.step, record);
    }
    record.shards++;
    const params = this.gradient.length;
    const bytesPer = bytesPerElement(m.weightsDtype ?? 'float32');
    if (m.weights && m.weights.byteLength !== params * bytesPer) {
      this.fail(new Error(`simulated worker ${worker.id}: weights of ${m.weights.byteLength / bytesPer} parameters, welcomed with ${params}`));
      return;
    }
    // Shards given to one worker are computed one after another, as a real worker does.
    const start = Math.max(arrived, worker.busyUntil);
    const finish = start + this.opts.computeMs;
    worker.busyUntil = finish;
    const count = assignedSamples(m);
    const dtype = this.gradDtype === 'float32' ? {} : { gradDtype: this.gradDtype };
    const head = { type: 'result', step: m.step, shard: m.shard, weightsVersion: m.weightsVersion, lossSum: count * LOSS_PER_SAMPLE, count, ...dtype } as const;
    const finishShard = (): void => {
      const now = performance.now();
      const computeMs = now - start;
      const upTo = this.streamGradients ? Math.floor(params / 2) : params;
      this.send(worker, { ...head, gradSum: this.gradient.subarray(0, upTo), from: 0, computeMs });
      const spent = (worker.computeOfStep.get(m.step) ?? 0) + computeMs;
      worker.computeOfStep.set(m.step, spent);
      worker.computeOfStep.delete(m.step - 2); // only the last steps matter
      const r = this.steps.get(m.step);
      if (r) {
        r.lastResultAt = now;
        r.maxComputeMs = Math.max(r.maxComputeMs, spent);
      }
    };
    if (!this.streamGradients) {
      setTimeout(finishShard, finish - arrived);
      return;
    }
    // The tail half first, then the rest: one timer after the other, since two timers of different
    // lengths set at once can fire in either order when the event loop is late.
    const half = Math.floor(params / 2);
    setTimeout(() => {
      this.send(worker, { ...head, gradSum: this.gradient.subarray(half), from: half, computeMs: 0 });
      setTimeout(finishShard, Math.max(0, finish - performance.now()));
    }, start + this.opts.computeMs / 2 - arrived);
  }
}
