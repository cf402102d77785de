/**
 * One of the run's N workers inside the coordinator's own process (--in-process-worker): the pool
 * admits it like any other member and the scheduler gives it shards like any other, but its
 * assignments are computed here instead of being sent, and its results enter the reducer as a
 * worker's would. The coordinator then starts N − 1 worker processes.
 *
 * Why: with as many worker processes as cores, the coordinator is one more process that mostly
 * waits, and each step pays its wake-ups and message hops on cores the workers compute on. Here it
 * computes a shard while the others compute theirs, and that shard costs no message at all.
 *
 * Its result is the one a worker process would send, bit for bit: the same gradient code, on the
 * weights as they travel (rounded to --grad-dtype), the gradient rounded the same way and handed
 * to the reducer in the bytes it would have travelled as. --deterministic's digests are therefore
 * those of N worker processes, and of --workers 0.
 */
import { hostname } from 'node:os';
import type { ModelDef } from '../models/types.js';
import { paramLayout } from '../models/index.js';
import { type GradDtype, encodeTensor } from '../protocol/grad-dtype.js';
import { type Hello, type ReceivedResult, PROTOCOL_VERSION } from '../protocol/messages.js';
import { type GradientOptions, type ShardData, createGradientComputer } from '../training/gradients.js';
import { travelledWeights } from '../training/source.js';

/** Who the in-process worker is, as a hello would say it: the coordinator's own build and engine. */
export type InProcessIdentity = Pick<Hello, 'backend' | 'device' | 'adapter' | 'build' | 'engine' | 'models' | 'trainData'>;

export class InProcessWorker {
  /** Its id in the pool (never a ZeroMQ routing id: nothing is sent to it). */
  readonly id = `${hostname()}-${process.pid}-in-process`;
  readonly hello: Hello;
  private readonly computer;
  private readonly gradBuffer: Float32Array;
  /** The 16-bit gradient as it would travel (--grad-dtype float16 or bfloat16). */
  private readonly grad16: Uint16Array;
  /** The step's weights rounded to --grad-dtype, once `roundedThisStep`. */
  private readonly rounded: Float32Array;
  private roundedThisStep = false;

  constructor(
    model: ModelDef,
    gradient: GradientOptions,
    private readonly gradDtype: GradDtype,
    identity: InProcessIdentity,
  ) {
    const params = paramLayout(model).total;
    this.computer = createGradientComputer(model, gradient);
    this.gradBuffer = new Float32Array(params);
    this.grad16 = new Uint16Array(gradDtype === 'float32' ? 0 : params);
    this.rounded = new Float32Array(gradDtype === 'float32' ? 0 : params);
    this.hello = { type: 'hello', protocol: PROTOCOL_VERSION, workerId: this.id, pid: process.pid, host: hostname(), ...identity };
  }

  /**
   * The result of `shard` (step `step`'s weights `weights`), as the reducer receives a worker's: its
   * gradient is a view of a buffer reused by the next call, so it must be taken in before then.
   */
  async compute(step: number, shard: number, weights: Float32Array, data: ShardData): Promise<ReceivedResult> {
    const started = performance.now();
    let used = weights;
    if (this.gradDtype !== 'float32') {
      // Rounded once per step, however many of its shards are computed here.
      if (!this.roundedThisStep) travelledWeights(weights, this.gradDtype, this.rounded);
      this.roundedThisStep = true;
      used = this.rounded;
    }
    const r = await this.computer.compute(used, data, this.gradBuffer);
    const travelled = encodeTensor(r.gradSum, this.gradDtype, this.grad16);
    return {
      type: 'result',
      step,
      shard,
      weightsVersion: step,
      gradSum: new Uint8Array(travelled.buffer, travelled.byteOffset, travelled.byteLength),
      ...(this.gradDtype !== 'float32' ? { gradDtype: this.gradDtype } : {}),
      from: 0,
      lossSum: r.lossSum,
      count: r.count,
      computeMs: performance.now() - started,
    };
  }

  /** A step begins: weights rounded for an earlier one are not reused. */
  beginStep(): void {
    this.roundedThisStep = false;
  }
}
