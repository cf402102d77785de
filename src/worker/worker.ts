/**
 * A worker: connects to the coordinator, announces itself, then computes the gradient of every
 * shard it is assigned and sends it back. It holds no optimiser state: weights and dropout keys
 * come with the assignments. It reads the MNIST training set (the bundled copy, or --data DIR) and
 * says which in its hello: a coordinator training on the same set sends sample indices; otherwise
 * (or with --data none) the assignments carry the shards' pixels and labels.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { Dealer } from 'zeromq';
import { type EngineChoice, engineIdentity, initEngine } from '../engine/backend.js';
import { createModel, isModelName, modelDigests, paramLayout } from '../models/index.js';
import {
  type ReceivedAssign,
  type ReceivedCoordinatorMessage,
  MAX_MESSAGE_BYTES,
  PROTOCOL_VERSION,
  ProtocolError,
  WORKER_EXIT,
  SendQueue,
  assignedSamples,
  copyTensor,
  decodeCoordinatorMessage,
  encode,
} from '../protocol/messages.js';
import { type ShardData, createGradientComputer } from '../training/gradients.js';
import { IMAGE_PIXELS, gatherSamples, loadTrainSplit, trainDataIdentity } from '../data/mnist.js';
import { type GradDtype, bytesPerElement, encodeTensor, receivedFloat32 } from '../protocol/grad-dtype.js';
import { UserError } from '../util/errors.js';
import { buildId } from '../util/build.js';
import { type WorkerKeys, helloProof } from '../protocol/keys.js';
import type { Logger } from '../util/logger.js';

export interface WorkerOptions {
  connect: string;
  gpu?: number;
  noCuda: boolean;
  /** --engine (default auto). */
  engine?: EngineChoice;
  logger: Logger;
  /** How long to wait for the coordinator's welcome. */
  connectTimeoutMs: number;
  /** CURVE keys (--keys DIR): encrypt the link and prove this worker to the coordinator. */
  keys?: WorkerKeys;
  /** Spawned by a local coordinator: the secret it gave this worker, said back in the hello. */
  secret?: string;
  /**
   * --data: the MNIST directory whose training set this worker reads samples from (absent: the
   * bundled copy; `none`: none, the coordinator sends pixels).
   */
  dataDir?: string;
}

/** The coordinator refused this worker (see WORKER_EXIT.refused): one line, and no retry. */
export class RefusedError extends UserError {
  override readonly exitCode: number = WORKER_EXIT.refused;
}

/** The coordinator put this worker out of the run (see WORKER_EXIT.putOut). */
export class PutOutError extends UserError {
  override readonly exitCode: number = WORKER_EXIT.putOut;
}

/** How often a worker waiting to join or rejoin says hello again. */
const REHELLO_MS = 2000;

/** Runs until the coordinator ends the run; returns the exit status (see WORKER_EXIT). */
export async function runWorker(opts: WorkerOptions): Promise<number> {
  const { logger } = opts;
  const engine = await initEngine({ noCuda: opts.noCuda, gpu: opts.gpu, engine: opts.engine });
  const workerId = `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
  // Who this worker is, for the coordinator to compare with its own (computed once).
  const identity = { build: buildId(), engine: engineIdentity(engine), models: modelDigests() };
  const trainSet = opts.dataDir === 'none' ? undefined : loadTrainSplit(opts.dataDir);
  const trainData = trainSet ? { trainData: trainDataIdentity(trainSet) } : {};
  const curve: Partial<Dealer> = opts.keys
    ? { curveServerKey: opts.keys.serverPublicKey, curvePublicKey: opts.keys.client.publicKey, curveSecretKey: opts.keys.client.secretKey }
    : {};
  const socket = new Dealer({ routingId: workerId, linger: 0, maxMessageSize: MAX_MESSAGE_BYTES, ...curve });
  const out = new SendQueue((frames) => socket.send(frames));

  const send = (m: Parameters<typeof encode>[0]): Promise<void> => out.send([encode(m)]);

  let lastHeard = Date.now();
  let timeoutMs = opts.connectTimeoutMs;
  let heartbeat: NodeJS.Timeout | undefined;
  let welcomed = false;
  let streamGradients = false;
  let stopReason: string | undefined;
  let exitCode: number = WORKER_EXIT.retry;
  let refusal: string | undefined;
  let computer: ReturnType<typeof createGradientComputer> | undefined;
  let paramCount = 0;
  // Kept from step to step: received tensors are copied into these, gradients computed into gradBuffer.
  // `weights` is what the shards of the current version are computed on: a view of the weights frame
  // as it arrived (float32), or weightsBuffer with the frame's 16-bit values widened into it.
  let weightsBuffer = new Float32Array(0);
  let weights: Float32Array = weightsBuffer;
  let weightsVersion = -1;
  let gradBuffer = new Float32Array(0);
  let keys = new Uint32Array(0);
  // A shard sent as sample indices: the indices, and the samples gathered from this worker's set.
  let indices = new Uint32Array(0);
  let pixels = new Uint8Array(0);
  let labels = new Uint8Array(0);
  /** The shard an assignment names, its samples gathered here when it names them by index. */
  const shardOf = (m: ReceivedAssign, count: number): ShardData => {
    if (keys.length < count) keys = new Uint32Array(count);
    copyTensor(m.keys, keys);
    if (!m.indices) return { pixels: m.pixels!, labels: m.labels!, keys: keys.subarray(0, count) };
    if (!trainSet) throw new ProtocolError('assignment by sample index, but this worker reads no training set (--data none)');
    if (indices.length < count) {
      indices = new Uint32Array(count);
      pixels = new Uint8Array(count * IMAGE_PIXELS);
      labels = new Uint8Array(count);
    }
    const shardIndices = indices.subarray(0, count);
    copyTensor(m.indices, shardIndices);
    for (const i of shardIndices) if (i >= trainSet.count) throw new ProtocolError(`sample index ${i} outside this worker's training set of ${trainSet.count}`);
    const shard = gatherSamples(trainSet, shardIndices, { pixels: pixels.subarray(0, count * IMAGE_PIXELS), labels: labels.subarray(0, count) });
    return { ...shard, keys: keys.subarray(0, count) };
  };
  // What gradients travel as (the coordinator's --grad-dtype, told in its welcome), and the buffer
  // a 16-bit encoding goes into.
  let gradDtype: GradDtype = 'float32';
  let grad16 = new Uint16Array(0);
  /** gradBuffer[from, to) as it travels. */
  const gradPart = (from: number, to: number): { gradSum: Float32Array | Uint16Array; gradDtype?: GradDtype } =>
    gradDtype === 'float32'
      ? { gradSum: gradBuffer.subarray(from, to) }
      : { gradSum: encodeTensor(gradBuffer.subarray(from, to), gradDtype, grad16.subarray(from, to)), gradDtype };

  // Joined once, this worker rejoins rather than leaves: when its coordinator falls silent (it
  // vanished, or dropped this worker) or stops a run early, it says hello again, every few seconds,
  // for up to --connect-timeout; a coordinator resumed on the same address, or the same one, then
  // admits it afresh. ZeroMQ reconnects the socket by itself.
  let everWelcomed = false;
  let lastHello = Date.now();
  // Counts rejoins: assignments queued before one are not computed after it (the coordinator has
  // given them to others, and the weights they need are gone with the reset below).
  let membership = 0;
  // A worker with its own key pair names itself, and proves the name, in every hello.
  const keyClaim = opts.keys?.name
    ? { keyName: opts.keys.name, keyProof: helloProof(opts.keys.client.secretKey, opts.keys.client.publicKey, opts.keys.serverPublicKey, opts.keys.name, workerId) }
    : {};
  const sayHello = (): void => {
    lastHello = Date.now();
    send({
      type: 'hello',
      protocol: PROTOCOL_VERSION,
      workerId,
      pid: process.pid,
      host: hostname(),
      backend: engine.name,
      device: engine.device,
      ...(engine.adapter ? { adapter: engine.adapter } : {}),
      ...(opts.secret ? { secret: opts.secret } : {}),
      ...identity,
      ...keyClaim,
      ...trainData,
    }).catch(() => {});
  };
  const rejoin = (why: string): void => {
    logger.warn(`${why}; saying hello again for up to ${Math.round(opts.connectTimeoutMs / 1000)} s`);
    welcomed = false;
    membership++;
    clearInterval(heartbeat);
    // A new coordinator sends the weights again; an old one's version means nothing to it.
    weightsVersion = -1;
    timeoutMs = opts.connectTimeoutMs;
    lastHeard = Date.now();
    sayHello();
  };

  // The receive loop below blocks in `receive()`; this watchdog ends it when the coordinator is gone.
  const watchdog = setInterval(() => {
    const now = Date.now();
    if (welcomed && now - lastHeard > timeoutMs) {
      rejoin(`coordinator silent for ${Math.round(timeoutMs / 1000)} s`);
    } else if (!welcomed && now - lastHeard > timeoutMs) {
      stopReason = everWelcomed
        ? `no coordinator at ${opts.connect} took this worker back within ${Math.round(timeoutMs / 1000)} s, exiting`
        : `no answer from a coordinator at ${opts.connect} within ${Math.round(timeoutMs / 1000)} s${opts.keys ? '' : ' (if it runs with --keys, this worker needs them too)'}`;
      socket.close();
    } else if (!welcomed && now - lastHello > REHELLO_MS) {
      // The first hello too: one written to a connection that is then cut (a proxy in front of a
      // coordinator that is not up yet, or restarting) is lost with it.
      sayHello();
    }
  }, 250);

  // A refused handshake never reaches the receive loop: watch the socket's events for it.
  let handshakeErrors = 0;
  void (async () => {
    try {
      for await (const event of socket.events) {
        if (welcomed) continue;
        if (event.type === 'handshake:error:auth') {
          refusal = `the coordinator at ${opts.connect} refused this worker's key (keys from another keygen?)`;
        } else if (event.type === 'handshake:error:protocol' || event.type === 'handshake:error:other') {
          // A connection closed during the handshake (ECONNRESET, EPIPE) says something about keys
          // only where keys are in play: a server refusing this worker's CURVE hello closes it so.
          // Without keys, or once this coordinator's keys have worked, it is a proxy in front of a
          // coordinator that is not up yet (or restarting): wait for it, up to --connect-timeout.
          if (event.type === 'handshake:error:other' && (!opts.keys || everWelcomed)) continue;
          if (++handshakeErrors < 3) continue;
          refusal = opts.keys
            ? `CURVE handshake with ${opts.connect} failed: the coordinator's key is not the one in --keys (keys from another keygen), or it runs without --keys`
            : `handshake with ${opts.connect} failed: the coordinator requires --keys`;
        } else continue;
        if (!socket.closed) socket.close();
        return;
      }
    } catch {
      // socket closed
    }
  })();

  // Connect only now that the watchers run; the hello waits in the send queue until a
  // connection is up (a DEALER's send blocks without one), so it must not be awaited here.
  socket.connect(opts.connect);
  sayHello();

  /** `given`: the rejoin count when it arrived; after another rejoin, its gradient goes nowhere. */
  const handleAssign = async (m: ReceivedAssign, given: number): Promise<void> => {
    if (!computer) throw new ProtocolError('assignment before welcome');
    if (m.weights) {
      const dtype = m.weightsDtype ?? 'float32';
      const length = m.weights.byteLength / bytesPerElement(dtype);
      if (length !== paramCount) throw new ProtocolError(`weights of length ${length}, expected ${paramCount}`);
      // The coordinator's weights rounded to the run's dtype: what this worker computes on. The engine
      // copies them into its own memory at every shard: float32 ones are not copied here first.
      weights = receivedFloat32(m.weights, dtype, weightsBuffer);
      weightsVersion = m.weightsVersion;
    }
    if (m.weightsVersion !== weightsVersion) throw new ProtocolError(`assignment for weights v${m.weightsVersion}, worker holds v${weightsVersion}`);
    const started = performance.now();
    const count = assignedSamples(m);
    const shard = shardOf(m, count);
    // Once most of the gradient is final (the last layers finish first), it leaves at once, from
    // inside the backward pass: its transfer overlaps the first layers' gradients, and only the
    // small rest is on the step's critical path.
    let sentFrom = paramCount;
    const sendTail = (from: number, lossSum: number): void => {
      if (!streamGradients || sentFrom < paramCount || from > paramCount / 2 || given !== membership) return;
      sentFrom = from;
      const part = { type: 'result', step: m.step, shard: m.shard, weightsVersion: m.weightsVersion, from, lossSum, count, computeMs: 0 } as const;
      send({ ...part, ...gradPart(from, paramCount) }).catch(() => {});
    };
    const r = await computer.compute(weights, shard, gradBuffer, sendTail);
    // Rejoined meanwhile: the coordinator may have given this shard to this worker again, and would
    // take what is left of this gradient for a part of the new one's.
    if (given !== membership) return;
    await send({
      type: 'result',
      step: m.step,
      shard: m.shard,
      weightsVersion: m.weightsVersion,
      ...gradPart(0, sentFrom),
      from: 0,
      lossSum: r.lossSum,
      count: r.count,
      computeMs: performance.now() - started,
    });
  };

  // Stopped from outside (Kubernetes, a terminal): say goodbye so the coordinator reassigns at once.
  const onSignal = (signal: NodeJS.Signals): void => {
    stopReason = `${signal} received`;
    exitCode = signal === 'SIGINT' ? WORKER_EXIT.interrupted : WORKER_EXIT.terminated;
    const close = (): void => {
      if (!socket.closed) socket.close();
    };
    send({ type: 'bye', reason: signal }).then(close, close);
    setTimeout(close, 500).unref();
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  // Said once SIGINT and SIGTERM are handled: whoever waits for this line may stop the worker with them.
  logger.info({ workerId, backend: engine.name, device: engine.device }, `worker ${workerId} (${engine.name} on ${engine.device}) connecting to ${opts.connect}`);

  let work: Promise<void> = Promise.resolve();
  let workError: unknown;
  try {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await socket.receive();
      } catch (e) {
        if (socket.closed) break;
        throw e;
      }
      lastHeard = Date.now();
      let msg: ReceivedCoordinatorMessage;
      try {
        msg = decodeCoordinatorMessage(frames);
      } catch (e) {
        logger.warn(`ignored a bad message from the coordinator: ${(e as Error).message}`);
        continue;
      }
      switch (msg.type) {
        case 'welcome': {
          if (!isModelName(msg.model)) throw new UserError(`coordinator asks for unknown model ${msg.model}`);
          const model = createModel(msg.model);
          paramCount = paramLayout(model).total;
          if (paramCount !== msg.params) throw new UserError(`model ${msg.model} has ${paramCount} parameters here, ${msg.params} at the coordinator`);
          computer = createGradientComputer(model, { augment: msg.augment });
          gradBuffer = new Float32Array(paramCount);
          weightsBuffer = new Float32Array(paramCount);
          weights = weightsBuffer;
          gradDtype = msg.gradDtype ?? 'float32';
          grad16 = new Uint16Array(gradDtype === 'float32' ? 0 : paramCount);
          weightsVersion = -1;
          timeoutMs = msg.timeoutMs;
          streamGradients = msg.streamGradients === true;
          if (everWelcomed) logger.info('rejoined the coordinator');
          welcomed = true;
          everWelcomed = true;
          clearInterval(heartbeat);
          heartbeat = setInterval(
            () => void send({ type: 'heartbeat', t: Date.now(), peakRss: process.resourceUsage().maxRSS * 1024 }).catch(() => {}),
            msg.heartbeatMs,
          );
          logger.info(`joined: training ${msg.model} (${paramCount} parameters)`);
          break;
        }
        case 'reject':
          if (msg.putOut) throw new PutOutError(`coordinator refused this worker: ${msg.reason}`);
          throw new RefusedError(`coordinator refused this worker: ${msg.reason}`);
        case 'assign': {
          // Not ours to compute while rejoining: the coordinator reassigns it once it welcomes this worker again.
          if (!welcomed) break;
          // Computed after the shards before it, while this loop goes on receiving: the
          // coordinator's heartbeats keep arriving during a long computation, so the watchdog
          // never mistakes this worker's own work for the coordinator's silence.
          const assignment = msg;
          const given = membership;
          work = work
            .then(() => (given === membership ? handleAssign(assignment, given) : undefined))
            .catch((e: unknown) => {
              // A result that cannot be sent because the socket closed is not an error.
              if (socket.closed) return;
              workError ??= e;
              socket.close();
            });
          break;
        }
        case 'heartbeat':
          break;
        case 'rehello':
          // The coordinator dropped this worker, or is a new one: rejoin now, not after the silence timeout.
          if (welcomed) rejoin(`the coordinator does not know this worker (${msg.reason})`);
          else sayHello();
          break;
        case 'shutdown':
          if (!msg.finished && !process.send) {
            // Stopped early (to be resumed): wait for it, or its successor, on the same address.
            // A spawned worker leaves: its coordinator starts new ones when it resumes.
            rejoin(`coordinator stopped the run early (${msg.reason})`);
            break;
          }
          stopReason = `coordinator says: ${msg.reason}`;
          exitCode = msg.finished ? WORKER_EXIT.finished : WORKER_EXIT.retry;
          socket.close();
          break;
      }
      if (socket.closed) break;
    }
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    clearInterval(watchdog);
    clearInterval(heartbeat);
    if (!socket.closed) socket.close();
    await work;
  }
  if (workError) throw workError;
  if (refusal) throw new UserError(refusal);
  const signalled = exitCode === WORKER_EXIT.terminated || exitCode === WORKER_EXIT.interrupted;
  if (stopReason && !welcomed && !everWelcomed && !signalled) throw new UserError(stopReason);
  logger.info(stopReason ?? 'stopped');
  return exitCode;
}
