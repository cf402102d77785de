/**
 * Checkpoints: everything a run needs to continue exactly where it stopped. The sample order and
 * dropout masks are functions of (seed, epoch, step), so weights, momentum buffers and counters
 * are the whole state.
 *
 * File layout: "MNISTCKP" | uint32 format version | msgpack payload | SHA-256 of the payload.
 * Written to a temporary file, fsynced and renamed over the previous one, which is kept as
 * `checkpoint.prev.bin`: a torn or corrupt file is detected and the one before it used.
 */
import { createHash } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { createCodec } from '../util/codec.js';
import { UserError } from '../util/errors.js';
import type { TrainConfig } from '../config.js';

const MAGIC = Buffer.from('MNISTCKP');
const FORMAT_VERSION = 1;
export const CHECKPOINT_FILE = 'checkpoint.bin';
export const PREVIOUS_CHECKPOINT_FILE = 'checkpoint.prev.bin';

export interface TrainingState {
  config: TrainConfig;
  /** 1-based epoch the next step belongs to. */
  epoch: number;
  /** Index within that epoch of the next batch. */
  batchInEpoch: number;
  /** Optimisation steps applied so far. */
  step: number;
  weights: Float32Array;
  velocity: Float32Array;
  /** Seconds spent in training steps so far (evaluation excluded). */
  trainSeconds: number;
  /** Samples trained on so far. */
  samplesSeen: number;
  workerFailures: number;
}

export class CheckpointError extends UserError {}

const codec = createCodec();

export function encodeCheckpoint(state: TrainingState): Buffer {
  // Typed arrays go as raw bytes (msgpackr's typed-array extension), never as JSON numbers.
  const payload = codec.pack({ ...state });
  const header = Buffer.alloc(MAGIC.length + 4);
  MAGIC.copy(header);
  header.writeUInt32LE(FORMAT_VERSION, MAGIC.length);
  return Buffer.concat([header, payload, createHash('sha256').update(payload).digest()]);
}

export function decodeCheckpoint(bytes: Buffer, name: string): TrainingState {
  const headerLength = MAGIC.length + 4;
  if (bytes.length < headerLength + 32 || !bytes.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw new CheckpointError(`${name}: not a checkpoint file`);
  }
  const version = bytes.readUInt32LE(MAGIC.length);
  if (version !== FORMAT_VERSION) throw new CheckpointError(`${name}: checkpoint format ${version}, expected ${FORMAT_VERSION}`);
  const payload = bytes.subarray(headerLength, bytes.length - 32);
  const digest = bytes.subarray(bytes.length - 32);
  if (!createHash('sha256').update(payload).digest().equals(digest)) {
    throw new CheckpointError(`${name}: checksum mismatch (corrupt or torn write)`);
  }
  const state = codec.unpack(payload) as TrainingState;
  if (!(state.weights instanceof Float32Array) || !(state.velocity instanceof Float32Array)) {
    throw new CheckpointError(`${name}: checkpoint lacks weights or momentum buffers`);
  }
  return state;
}

/** Writes atomically: temp file, fsync, keep the old one as previous, rename into place. */
export function saveCheckpoint(outDir: string, state: TrainingState): void {
  const path = join(outDir, CHECKPOINT_FILE);
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  try {
    writeSync(fd, encodeCheckpoint(state));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  if (existsSync(path)) renameSync(path, join(outDir, PREVIOUS_CHECKPOINT_FILE));
  renameSync(tmp, path);
  // The directory entry must reach the disk too, or a crash can lose the rename.
  const dirFd = openSync(outDir, 'r');
  try {
    fsyncSync(dirFd);
  } finally {
    closeSync(dirFd);
  }
}

export interface LoadedCheckpoint {
  state: TrainingState;
  file: string;
  /** Problems with newer checkpoints that were skipped. */
  skipped: string[];
}

/** The newest readable checkpoint in `outDir`, or undefined when there is none at all. */
export function loadLatestCheckpoint(outDir: string): LoadedCheckpoint | undefined {
  const skipped: string[] = [];
  for (const file of [CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE]) {
    const path = join(outDir, file);
    if (!existsSync(path)) continue;
    try {
      return { state: decodeCheckpoint(readFileSync(path), path), file: path, skipped };
    } catch (e) {
      skipped.push((e as Error).message);
    }
  }
  if (skipped.length > 0) throw new CheckpointError(`no usable checkpoint in ${outDir}: ${skipped.join('; ')}`);
  return undefined;
}
