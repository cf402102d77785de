/**
 * The largest frames a run puts on the wire, known before it starts. Past the message limit
 * (MAX_MESSAGE_BYTES, both sides' ZeroMQ maximum message size) ZeroMQ drops the connection for good,
 * and every worker would be lost the first time it is sent the weights; the hub refuses such a run
 * at start, with one line naming the model's size and the limit.
 */
import { MAX_MESSAGE_BYTES, encode } from '../protocol/messages.js';

/** Bytes of one image in an assignment: 28 × 28 uint8 pixels. */
const IMAGE_BYTES = 28 * 28;
/** The largest number msgpack spends 9 bytes on; step, shard and version numbers stay below it. */
const BIG = Number.MAX_SAFE_INTEGER;

/** Bytes of a msgpack bin header for a payload of `n` bytes (bin8, bin16, bin32). */
function binHeader(n: number): number {
  return n < 0x100 ? 2 : n < 0x10000 ? 3 : 5;
}

/** A message's encoded size, from its skeleton (tensors empty) and the tensors' byte lengths. */
function frameBytes(skeleton: Parameters<typeof encode>[0], tensorBytes: number[]): number {
  let bytes = encode(skeleton).length;
  for (const n of tensorBytes) bytes += n + binHeader(n) - binHeader(0);
  return bytes;
}

export interface FrameSizes {
  /**
   * An assignment that carries the weights, its header and weights frames together: the most the
   * coordinator sends at once (each frame alone is smaller).
   */
  assign: number;
  /** A whole shard's gradient: the largest frame the coordinator receives. */
  result: number;
  largest: number;
}

/**
 * Upper bounds, in bytes, of the frames a run sends and receives, for a model of `params` float32
 * parameters and shards of at most `shardSamples` samples (exact but for the numbers' widths,
 * counted at their widest), the samples travelling as pixels (the most) or as indices.
 */
export function largestFrames(params: number, shardSamples: number, samplesAs: 'pixels' | 'indices' = 'pixels'): FrameSizes {
  const empty = { f32: new Float32Array(0), u8: new Uint8Array(0), u32: new Uint32Array(0) };
  const header = { type: 'assign', step: BIG, shard: BIG, weightsVersion: BIG, weightsCount: params, keys: empty.u32 } as const;
  // A worker that holds the training set is sent each sample's index (4 bytes), any other its pixels and label.
  const assign =
    (samplesAs === 'indices'
      ? frameBytes({ ...header, indices: empty.u32 }, [shardSamples * 4, shardSamples * 4])
      : frameBytes({ ...header, pixels: empty.u8, labels: empty.u8 }, [shardSamples * IMAGE_BYTES, shardSamples, shardSamples * 4])) +
    params * 4;
  const result = frameBytes(
    { type: 'result', step: BIG, shard: BIG, weightsVersion: BIG, gradSum: empty.f32, from: BIG, lossSum: Math.PI, count: BIG, computeMs: Math.PI },
    [params * 4],
  );
  return { assign, result, largest: Math.max(assign, result) };
}

const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/**
 * Why a run of `model` (`params` parameters, shards of up to `shardSamples` samples) cannot keep
 * its messages within `limit` bytes, in one line; undefined when it can.
 */
export function messageLimitProblem(model: string, params: number, shardSamples: number, limit = MAX_MESSAGE_BYTES): string | undefined {
  const frames = largestFrames(params, shardSamples);
  if (frames.largest <= limit) return undefined;
  const weights = params * 4;
  const fix =
    weights + binHeader(weights) >= limit
      ? 'the weights alone do not fit in one message'
      : `fewer samples per shard would fit: a smaller --batch-size, more --workers, or --deterministic with a smaller --shard-size`;
  return (
    `model ${model} has ${params.toLocaleString('en-US')} parameters (${mib(weights)} of weights); with shards of up to ${shardSamples} samples ` +
    `a message takes ${mib(frames.largest)}, over the ${mib(limit)} message limit: ${fix}`
  );
}
