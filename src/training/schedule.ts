/**
 * Which samples each step sees. Everything is a pure function of (seed, epoch, batch), so a
 * resumed run, a worker on another machine and a rerun all agree without sharing generator state.
 */
import { SeededRng, hash32 } from '../util/rng.js';

const SHUFFLE_STREAM = 0x5afe;
const SAMPLE_KEY_STREAM = 0xd0d0;

/** The epoch's permutation of [0, count): PyTorch's DataLoader(shuffle=True), from our generator. */
export function epochOrder(seed: number, epoch: number, count: number): Uint32Array {
  const order = new Uint32Array(count);
  for (let i = 0; i < count; i++) order[i] = i;
  return SeededRng.create(seed, SHUFFLE_STREAM, epoch).shuffle(order);
}

/** The key a sample's dropout masks (and augmentation) are drawn from, in a given epoch. */
export function sampleKey(seed: number, epoch: number, sampleIndex: number): number {
  return hash32(seed, SAMPLE_KEY_STREAM, epoch, sampleIndex);
}

export function batchesPerEpoch(count: number, batchSize: number): number {
  return Math.ceil(count / batchSize);
}

/** [start, end) ranges of a batch's shards: fixed-size shards, the last one possibly short. */
export function fixedSizeShards(batchLength: number, shardSize: number): Array<[number, number]> {
  const ranges: Array<[number, number]> = [];
  for (let start = 0; start < batchLength; start += shardSize) ranges.push([start, Math.min(batchLength, start + shardSize)]);
  return ranges;
}

/** [start, end) ranges that split a batch into `parts` near-equal contiguous slices (none empty). */
export function evenShards(batchLength: number, parts: number): Array<[number, number]> {
  const n = Math.max(1, Math.min(parts, batchLength));
  const ranges: Array<[number, number]> = [];
  for (let i = 0; i < n; i++) ranges.push([Math.floor((i * batchLength) / n), Math.floor(((i + 1) * batchLength) / n)]);
  return ranges;
}
