/**
 * The wire protocol between coordinator and workers: typed messages packed with msgpackr, tensors
 * as binary typed arrays. The coordinator binds a ROUTER; each worker connects a DEALER whose
 * routing id names it. One message = one ZeroMQ frame (plus the ROUTER's identity frame).
 *
 *   worker → coordinator: hello, result, heartbeat, bye
 *   coordinator → worker: welcome, reject, assign, heartbeat, shutdown
 */
import { createCodec } from '../util/codec.js';

/** Bumped whenever a message changes shape; a worker of another version is refused. */
export const PROTOCOL_VERSION = 1;

/** Largest message either side accepts (a shard of 1024 images with weights is ~1 MB). */
export const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

export interface Hello {
  type: 'hello';
  protocol: number;
  workerId: string;
  pid: number;
  host: string;
  /** The engine the worker computes with, and on what. */
  backend: string;
  device: string;
}

export interface Welcome {
  type: 'welcome';
  /** The model whose gradients the worker computes. */
  model: string;
  /** Number of float32 parameters (weights and gradients have exactly this length). */
  params: number;
  heartbeatMs: number;
  /** The worker declares the coordinator lost after this long without a message. */
  timeoutMs: number;
  /** Seeded augmentation the worker applies to training shards (absent: none). */
  augment?: { maxRotateDeg: number; maxScale: number; maxShift: number };
  /**
   * Send each shard's gradient in two parts, the tail as soon as the backward pass has finished
   * it (see Result): its transfer then overlaps the first layers' gradients.
   */
  streamGradients?: boolean;
}

export interface Reject {
  type: 'reject';
  reason: string;
}

/** One shard of one step. Weights ride along only when the worker lacks this version. */
export interface Assign {
  type: 'assign';
  step: number;
  /** Index of the shard within the step's batch. */
  shard: number;
  weightsVersion: number;
  weights?: Float32Array;
  /** [n × 28 × 28] uint8 pixels, labels, per-sample dropout keys. */
  pixels: Uint8Array;
  labels: Uint8Array;
  keys: Uint32Array;
}

export interface Result {
  type: 'result';
  step: number;
  shard: number;
  weightsVersion: number;
  /**
   * Σ over the shard's samples of the loss gradient, canonical parameter order: entries
   * [from, from + gradSum.length) of it. A worker may send a shard's gradient in parts, tail first
   * (the backward pass finishes the last layers first): each part ends where the previous began,
   * and the part with from = 0 completes the shard.
   */
  gradSum: Float32Array;
  /** Where gradSum starts in the flat gradient; absent means 0. */
  from?: number;
  lossSum: number;
  count: number;
  /** Time the worker spent computing, for the coordinator's statistics. */
  computeMs: number;
}

export interface Heartbeat {
  type: 'heartbeat';
  /** Sender's clock, milliseconds. */
  t: number;
  /** Worker → coordinator: the worker's peak resident memory so far, bytes. */
  peakRss?: number;
}

export interface Shutdown {
  type: 'shutdown';
  reason: string;
  /** True when the run is over; false when it stopped early and will be resumed (or failed). */
  finished: boolean;
}

/** A worker's exit status: what its supervisor (a shell, Kubernetes) should do next. */
export const WORKER_EXIT = {
  /** The coordinator said the run is finished. */
  finished: 0,
  /** The coordinator stopped early, vanished or never answered: retry later (EX_TEMPFAIL). */
  retry: 75,
  /** Stopped by SIGTERM: 128 + 15. */
  terminated: 143,
} as const;

export interface Bye {
  type: 'bye';
  reason: string;
}

export type WorkerMessage = Hello | Result | Heartbeat | Bye;
export type CoordinatorMessage = Welcome | Reject | Assign | Heartbeat | Shutdown;

const codec = createCodec();

export function encode(message: WorkerMessage | CoordinatorMessage): Buffer {
  return codec.pack(message);
}

export class ProtocolError extends Error {}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function need(cond: boolean, what: string): void {
  if (!cond) throw new ProtocolError(what);
}

const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/** Decodes and checks a message from a worker; throws ProtocolError on anything malformed. */
/** Unpacks one frame into a map, or throws ProtocolError. */
function unpackMap(frame: Uint8Array): Record<string, unknown> {
  let m: unknown;
  try {
    m = codec.unpack(frame);
  } catch (e) {
    throw new ProtocolError(`malformed msgpack (${(e as Error).message})`);
  }
  need(isObject(m), 'message is not a map');
  return m as Record<string, unknown>;
}

export function decodeWorkerMessage(frame: Uint8Array): WorkerMessage {
  const msg = unpackMap(frame);
  switch (msg.type) {
    case 'hello':
      need(typeof msg.protocol === 'number', 'hello without protocol version');
      need(typeof msg.workerId === 'string' && msg.workerId.length > 0 && msg.workerId.length <= 200, 'hello with a bad workerId');
      need(typeof msg.backend === 'string' && typeof msg.device === 'string', 'hello without backend/device');
      return msg as unknown as Hello;
    case 'result':
      need(isCount(msg.step) && isCount(msg.shard) && isCount(msg.weightsVersion), 'result with bad step/shard/version');
      need(msg.gradSum instanceof Float32Array, 'result without a float32 gradient');
      need(msg.from === undefined || isCount(msg.from), 'result with a bad part offset');
      need(typeof msg.lossSum === 'number' && isCount(msg.count) && (msg.count as number) > 0, 'result with bad loss/count');
      return msg as unknown as Result;
    case 'heartbeat':
      return msg as unknown as Heartbeat;
    case 'bye':
      return { type: 'bye', reason: String(msg.reason ?? '') };
    default:
      throw new ProtocolError(`unknown message type ${JSON.stringify(msg.type)?.slice(0, 40)}`);
  }
}

/** Decodes and checks a message from the coordinator. */
export function decodeCoordinatorMessage(frame: Uint8Array): CoordinatorMessage {
  const msg = unpackMap(frame);
  switch (msg.type) {
    case 'welcome':
      need(typeof msg.model === 'string' && isCount(msg.params), 'welcome without model');
      return msg as unknown as Welcome;
    case 'assign':
      need(isCount(msg.step) && isCount(msg.shard) && isCount(msg.weightsVersion), 'assign with bad step/shard/version');
      need(msg.pixels instanceof Uint8Array && msg.labels instanceof Uint8Array && msg.keys instanceof Uint32Array, 'assign without shard data');
      need(msg.weights === undefined || msg.weights instanceof Float32Array, 'assign with bad weights');
      return msg as unknown as Assign;
    case 'reject':
    case 'heartbeat':
    case 'shutdown':
      return msg as unknown as CoordinatorMessage;
    default:
      throw new ProtocolError(`unknown message type ${JSON.stringify(msg.type)?.slice(0, 40)}`);
  }
}

/**
 * Serialises sends on one socket: zeromq.js allows a single pending send per socket, and a
 * heartbeat timer must not collide with a result being sent.
 */
export class SendQueue {
  private tail: Promise<void> = Promise.resolve();
  private pending = 0;

  constructor(private readonly sendFn: (frames: Array<Buffer | string>) => Promise<void>) {}

  /**
   * Sends after every earlier send. With none pending it hands the frames to ZeroMQ at once, in
   * this call: a worker sends the first part of a gradient from inside its backward pass, and a
   * send deferred to a later tick would wait until the computation returns.
   */
  send(frames: Array<Buffer | string>): Promise<void> {
    const start = (): Promise<void> => {
      try {
        return this.sendFn(frames);
      } catch (e) {
        return Promise.reject(e);
      }
    };
    const next = this.pending === 0 ? start() : this.tail.then(start);
    this.pending++;
    // A failed send must not wedge the queue; the caller sees the error through `next`.
    this.tail = next.then(
      () => void this.pending--,
      () => void this.pending--,
    );
    return next;
  }

  /** Resolves once every send queued so far has been handed to ZeroMQ. */
  drain(): Promise<void> {
    return this.tail;
  }
}
