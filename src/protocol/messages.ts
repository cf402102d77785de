/**
 * The wire protocol between coordinator and workers: typed messages packed with msgpackr. The
 * coordinator binds a ROUTER; each worker connects a DEALER whose routing id names it. One
 * message = one ZeroMQ frame (plus the ROUTER's identity frame), but for an assignment that carries
 * the weights: its header frame, then the step's weights frame (encodeWeightsFrame), one buffer
 * shared by every assignment of the step.
 *
 *   worker → coordinator: hello, result, heartbeat, bye
 *   coordinator → worker: welcome, reject, assign, heartbeat, shutdown
 *
 * A worker that holds the run's training set (its hello's `trainData` matches the coordinator's) is
 * sent each shard's sample indices; any other worker, the shard's pixels and labels.
 *
 * Tensors travel as msgpack `bin`: their raw little-endian bytes, never lists of numbers, in the
 * dtype their message names (float32 when it names none; see grad-dtype.ts). A
 * received tensor is a view of those bytes inside the received frame (`Received*` types): the
 * receiver copies it once, straight into a buffer it keeps from step to step (`copyTensor`), so
 * that no step leaves a tensor-sized allocation behind on either side.
 */
import { createCodec } from '../util/codec.js';
import { type GradDtype, bytesPerElement, encodeTensor, isGradDtype } from './grad-dtype.js';

/** Bumped whenever a message changes shape; a worker of another version is refused. */
export const PROTOCOL_VERSION = 6;

/** Bytes of one image in an assignment: 28 × 28 uint8 pixels. */
const IMAGE_BYTES = 28 * 28;

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
  /** The GPU adapter, for a GPU engine (webgpu). */
  adapter?: { vendor: string; architecture: string; device: string; description: string; software: boolean };
  /**
   * A worker the coordinator spawned: the secret it was given (WORKER_SECRET_ENV). It proves the
   * worker is that child; a pid proves nothing.
   */
  secret?: string;
  /** The worker's build: package version + a digest of its code (util/build.ts). */
  build: string;
  /** What decides its engine's bits (engine/backend.ts engineIdentity), e.g. "wasm (fused kernels)". */
  engine: string;
  /** Every model the worker knows, by name, with its digest (models/index.ts modelDigest). */
  models: Record<string, string>;
  /**
   * A worker with its own key pair (`keygen --worker NAME`): its name, and the proof that it holds
   * that name's secret key (protocol/keys.ts helloProof).
   */
  keyName?: string;
  keyProof?: string;
  /**
   * The MNIST training set this worker reads samples from (data/mnist.ts trainDataIdentity): where it
   * matches the coordinator's, assignments carry sample indices instead of pixels.
   */
  trainData?: { count: number; digest: string };
}

/** Where a spawned worker finds its secret: an environment variable, never the command line. */
export const WORKER_SECRET_ENV = 'MNIST_DDP_WORKER_SECRET';

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
  /**
   * What this run's weights and gradients travel as (--grad-dtype; absent: float32): the worker
   * sends its gradients so, and receives weights so.
   */
  gradDtype?: GradDtype;
}

export interface Reject {
  type: 'reject';
  reason: string;
  /**
   * This worker, not its build or flags, is shut out of the run: its key was revoked, or a result of
   * its failed a spot check (WORKER_EXIT.putOut, where `refused` would stop every worker of a Job).
   */
  putOut?: boolean;
}

/**
 * One shard of one step: the header frame. Weights ride along, in a frame of their own after it,
 * only when the worker lacks this version (encodeAssign).
 */
export interface Assign {
  type: 'assign';
  step: number;
  /** Index of the shard within the step's batch. */
  shard: number;
  weightsVersion: number;
  /** Parameters in the weights frame that follows this header (absent: no weights frame). */
  weightsCount?: number;
  /** The dtype of the weights frame (absent: float32). */
  weightsDtype?: GradDtype;
  /**
   * The shard's samples: their indices in the training set, for a worker that holds the same set;
   * else their [n × 28 × 28] uint8 pixels and labels. Either way, per-sample dropout keys.
   */
  indices?: Uint32Array;
  pixels?: Uint8Array;
  labels?: Uint8Array;
  keys: Uint32Array;
}

/** An assignment as the worker receives it: its tensors are views of the frames' bytes. */
export interface ReceivedAssign extends Omit<Assign, 'keys' | 'indices'> {
  /** The weights frame: `weightsCount` little-endian values of `weightsDtype`, when they ride along. */
  weights?: Uint8Array;
  /** uint32 keys, little-endian. */
  keys: Uint8Array;
  /** uint32 sample indices, little-endian. */
  indices?: Uint8Array;
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
   * and the part with from = 0 completes the shard. In `gradDtype` (16-bit patterns in a Uint16Array
   * for float16 and bfloat16).
   */
  gradSum: Float32Array | Uint16Array;
  /** The dtype of `gradSum` (absent: float32). */
  gradDtype?: GradDtype;
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

/**
 * The coordinator does not know the connection a heartbeat or result came from (it dropped that
 * worker, or it was restarted): the worker says hello again at once rather than after its own
 * silence timeout. Sent at most once a second per connection, and never to one put out of the run.
 * A new message type, not a changed shape: a worker that lacks it ignores it with a warning and
 * rejoins after its silence timeout, as before.
 */
export interface Rehello {
  type: 'rehello';
  reason: string;
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
  /**
   * The coordinator refused this worker: another protocol version, model, or (in deterministic
   * mode) engine or build. Another try cannot help (EX_CONFIG).
   */
  refused: 78,
  /**
   * The coordinator put this worker out of the run: its key was revoked, or one of its results failed
   * a spot check (--verify-fraction). It concerns this worker alone (EX_NOPERM).
   */
  putOut: 77,
  /** Stopped by SIGTERM: 128 + 15. */
  terminated: 143,
  /** Stopped by SIGINT (Ctrl-C): 128 + 2. */
  interrupted: 130,
} as const;

export interface Bye {
  type: 'bye';
  reason: string;
}

/** A result as the coordinator receives it: the gradient is a view of the frame's bytes. */
export interface ReceivedResult extends Omit<Result, 'gradSum'> {
  /** Gradient entries [from, from + gradSum.byteLength / bytes per element), little-endian, in `gradDtype`. */
  gradSum: Uint8Array;
}

export type WorkerMessage = Hello | Result | Heartbeat | Bye;
export type CoordinatorMessage = Welcome | Reject | Assign | Heartbeat | Shutdown | Rehello;
export type ReceivedWorkerMessage = Hello | ReceivedResult | Heartbeat | Bye;
export type ReceivedCoordinatorMessage = Welcome | Reject | ReceivedAssign | Heartbeat | Shutdown | Rehello;

const codec = createCodec();

/**
 * The bytes of a typed array, without a copy. A Node Buffer, because msgpackr packs a Buffer as
 * `bin` (and unpacks `bin` as a view of the frame), but any other typed array, a plain Uint8Array
 * too, as its typed-array extension (unpacked as a copy).
 */
function bytesOf(a: ArrayBufferView): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** Packs a message into one frame; its tensors are copied once, into the frame. */
export function encode(message: WorkerMessage | CoordinatorMessage): Buffer {
  switch (message.type) {
    case 'result':
      return codec.pack({ ...message, gradSum: bytesOf(message.gradSum) });
    case 'assign':
      return codec.pack({
        ...message,
        ...(message.indices ? { indices: bytesOf(message.indices) } : {}),
        ...(message.pixels ? { pixels: bytesOf(message.pixels) } : {}),
        ...(message.labels ? { labels: bytesOf(message.labels) } : {}),
        keys: bytesOf(message.keys),
      });
    default:
      return codec.pack(message);
  }
}

/** A step's weights as they travel: one frame, encoded once and sent with every assignment that carries them. */
export interface WeightsFrame {
  /** `count` little-endian values of `dtype`; never written again once encoded. */
  bytes: Buffer;
  count: number;
  dtype: GradDtype;
}

/** Bytes of `count` weights as they travel in `dtype`. */
export function weightsFrameBytes(count: number, dtype: GradDtype): number {
  return count * bytesPerElement(dtype);
}

/**
 * Encodes `weights` in `dtype` into `into` (weightsFrameBytes long, 2-byte aligned), or a buffer of
 * their own. zeromq.js sends a buffer of more than 128 bytes without copying it: it holds the
 * buffer until its I/O thread has written it out, however long a slow worker's queue takes, so a
 * buffer may be written again only once no assignment that carries it is still queued (the
 * coordinator's WeightsFrames knows when).
 */
export function encodeWeightsFrame(weights: Float32Array, dtype: GradDtype, into?: Buffer): WeightsFrame {
  // Its own ArrayBuffer (not Node's shared pool): aligned for a Uint16Array view, and freed with it.
  const bytes = into ?? Buffer.allocUnsafeSlow(weightsFrameBytes(weights.length, dtype));
  if (bytes.byteLength !== weightsFrameBytes(weights.length, dtype)) throw new RangeError(`a weights frame of ${bytes.byteLength} bytes for ${weights.length} ${dtype} values`);
  if (dtype === 'float32') bytes.set(bytesOf(weights));
  else encodeTensor(weights, dtype, new Uint16Array(bytes.buffer, bytes.byteOffset, weights.length));
  return { bytes, count: weights.length, dtype };
}

/** An assignment's frames: its header, then the step's weights frame when it carries the weights. */
export function encodeAssign(assign: Omit<Assign, 'weightsCount' | 'weightsDtype'>, weights?: WeightsFrame): Buffer[] {
  if (!weights) return [encode(assign)];
  const dtype = weights.dtype === 'float32' ? {} : { weightsDtype: weights.dtype };
  return [encode({ ...assign, weightsCount: weights.count, ...dtype }), weights.bytes];
}

/** The samples an assignment holds (its dropout keys: one per sample, whatever else it carries). */
export function assignedSamples(m: Pick<ReceivedAssign, 'keys'>): number {
  return m.keys.byteLength / 4;
}

/** Copies a received tensor's bytes into `into` from element `at` on (one memcpy; any alignment). */
export function copyTensor(bytes: Uint8Array, into: Float32Array | Uint32Array, at = 0): void {
  new Uint8Array(into.buffer, into.byteOffset + at * into.BYTES_PER_ELEMENT, bytes.byteLength).set(bytes);
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

const isShortString = (v: unknown): v is string => typeof v === 'string' && v.length <= 500;
/** A hello's model digests: a few names, each with a short digest. */
const isDigestMap = (v: unknown): boolean =>
  isObject(v) && Object.keys(v).length <= 64 && Object.entries(v).every(([k, d]) => k.length <= 100 && isShortString(d));
const isAdapter = (v: unknown): boolean =>
  isObject(v) &&
  ['vendor', 'architecture', 'device', 'description'].every((k) => isShortString((v as Record<string, unknown>)[k])) &&
  typeof (v as Record<string, unknown>).software === 'boolean';

/** A hello's training-set identity: a sample count and a short digest. */
const isTrainData = (v: unknown): boolean => isObject(v) && isCount(v.count) && isShortString(v.digest);

/** A `bin` field holding whole elements of `bytesPer` bytes. */
const isTensorBytes = (v: unknown, bytesPer: number): v is Uint8Array => v instanceof Uint8Array && v.byteLength % bytesPer === 0;

export function decodeWorkerMessage(frame: Uint8Array): ReceivedWorkerMessage {
  const msg = unpackMap(frame);
  switch (msg.type) {
    case 'hello':
      need(typeof msg.protocol === 'number', 'hello without protocol version');
      need(typeof msg.workerId === 'string' && msg.workerId.length > 0 && msg.workerId.length <= 200, 'hello with a bad workerId');
      need(typeof msg.backend === 'string' && typeof msg.device === 'string', 'hello without backend/device');
      need(msg.adapter === undefined || isAdapter(msg.adapter), 'hello with a malformed adapter');
      need(msg.secret === undefined || isShortString(msg.secret), 'hello with a malformed secret');
      // A hello of another version is passed on as it is: the coordinator answers it with a refusal
      // that names both versions, and the worker leaves with that line.
      if (msg.protocol === PROTOCOL_VERSION) {
        need(isShortString(msg.build) && isShortString(msg.engine), 'hello without build/engine');
        need(isDigestMap(msg.models), 'hello without model digests');
      }
      need(msg.keyName === undefined || isShortString(msg.keyName), 'hello with a malformed key name');
      need(msg.keyProof === undefined || (typeof msg.keyProof === 'string' && /^[0-9a-f]{64}$/.test(msg.keyProof)), 'hello with a malformed key proof');
      need(msg.trainData === undefined || isTrainData(msg.trainData), 'hello with a malformed trainData');
      return msg as unknown as Hello;
    case 'result':
      need(isCount(msg.step) && isCount(msg.shard) && isCount(msg.weightsVersion), 'result with bad step/shard/version');
      need(msg.gradDtype === undefined || isGradDtype(msg.gradDtype), 'result with an unknown gradDtype');
      {
        const dtype = (msg.gradDtype as GradDtype | undefined) ?? 'float32';
        need(isTensorBytes(msg.gradSum, bytesPerElement(dtype)), `result without a ${dtype} gradient`);
      }
      need(msg.from === undefined || isCount(msg.from), 'result with a bad part offset');
      need(typeof msg.lossSum === 'number' && isCount(msg.count) && (msg.count as number) > 0, 'result with bad loss/count');
      return msg as unknown as ReceivedResult;
    case 'heartbeat':
      return msg as unknown as Heartbeat;
    case 'bye':
      return { type: 'bye', reason: String(msg.reason ?? '') };
    default:
      throw new ProtocolError(`unknown message type ${JSON.stringify(msg.type)?.slice(0, 40)}`);
  }
}

/**
 * Decodes and checks a message from the coordinator: its frames (one frame alone for a message of
 * one frame).
 */
export function decodeCoordinatorMessage(message: Uint8Array | readonly Uint8Array[]): ReceivedCoordinatorMessage {
  const frames = message instanceof Uint8Array ? [message] : message;
  need(frames.length > 0, 'message without frames');
  const msg = unpackMap(frames[0]);
  // Only an assignment may carry a second frame, its weights: checked below.
  need(frames.length === 1 || msg.type === 'assign', `${String(msg.type).slice(0, 40)} message of ${frames.length} frames`);
  switch (msg.type) {
    case 'welcome':
      need(typeof msg.model === 'string' && isCount(msg.params), 'welcome without model');
      need(msg.gradDtype === undefined || isGradDtype(msg.gradDtype), 'welcome with an unknown gradDtype');
      return msg as unknown as Welcome;
    case 'assign':
      need(isCount(msg.step) && isCount(msg.shard) && isCount(msg.weightsVersion), 'assign with bad step/shard/version');
      need(isTensorBytes(msg.keys, 4), 'assign without dropout keys');
      {
        const n = (msg.keys as Uint8Array).byteLength / 4;
        if (msg.indices !== undefined) {
          need(isTensorBytes(msg.indices, 4) && msg.pixels === undefined && msg.labels === undefined, 'assign with sample indices and pixels, or malformed indices');
          need((msg.indices as Uint8Array).byteLength === n * 4, 'assign with shard data of mismatched sizes');
        } else {
          need(isTensorBytes(msg.pixels, 1) && isTensorBytes(msg.labels, 1), 'assign without shard data');
          need((msg.labels as Uint8Array).byteLength === n && (msg.pixels as Uint8Array).byteLength === n * IMAGE_BYTES, 'assign with shard data of mismatched sizes');
        }
      }
      need(msg.weightsDtype === undefined || isGradDtype(msg.weightsDtype), 'assign with an unknown weightsDtype');
      need(msg.weights === undefined, 'assign with weights in its header');
      need(msg.weightsCount === undefined || isCount(msg.weightsCount), 'assign with a bad weights count');
      if (msg.weightsCount === undefined) {
        need(frames.length === 1, 'assign with a weights frame its header does not announce');
      } else {
        need(frames.length === 2, frames.length === 1 ? 'assign without its weights frame' : `assign of ${frames.length} frames`);
        const dtype = (msg.weightsDtype as GradDtype | undefined) ?? 'float32';
        const expected = (msg.weightsCount as number) * bytesPerElement(dtype);
        need(frames[1].byteLength === expected, `assign with a weights frame of ${frames[1].byteLength} bytes, not ${msg.weightsCount} ${dtype} values (${expected} bytes)`);
        msg.weights = frames[1];
      }
      return msg as unknown as ReceivedAssign;
    case 'rehello':
      need(isShortString(msg.reason), 'rehello without a reason');
      return { type: 'rehello', reason: msg.reason as string };
    case 'reject':
    case 'heartbeat':
    case 'shutdown':
      return msg as unknown as ReceivedCoordinatorMessage;
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
