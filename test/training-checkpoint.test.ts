import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { DEFAULTS, type TrainConfig } from '../src/config.js';
import {
  CHECKPOINT_FILE,
  PREVIOUS_CHECKPOINT_FILE,
  type TrainingState,
  decodeCheckpoint,
  encodeCheckpoint,
  loadLatestCheckpoint,
  saveCheckpoint,
} from '../src/training/checkpoint.js';
import { tempDir } from './helpers.js';

function state(step: number): TrainingState {
  const config = { ...DEFAULTS, model: 'net', workers: 0, outDir: '/x' } as unknown as TrainConfig;
  return {
    config,
    epoch: 2,
    batchInEpoch: 3,
    step,
    weights: Float32Array.from({ length: 100 }, (_, i) => i * 0.5 + step),
    velocity: Float32Array.from({ length: 100 }, (_, i) => -i),
    trainSeconds: 1.5,
    samplesSeen: 640,
    workerFailures: 1,
  };
}

test('a checkpoint round-trips every field, typed arrays included', () => {
  const s = state(7);
  const back = decodeCheckpoint(encodeCheckpoint(s), 'ckpt');
  assert.ok(back.weights instanceof Float32Array);
  assert.deepEqual(back, s);
});

test('corruption is detected by the checksum', () => {
  const bytes = encodeCheckpoint(state(7));
  bytes[bytes.length - 100] ^= 1;
  assert.throws(() => decodeCheckpoint(bytes, 'ckpt'), /ckpt: checksum mismatch/);
  assert.throws(() => decodeCheckpoint(Buffer.from('garbage'), 'ckpt'), /not a checkpoint file/);
});

test('saving keeps the previous checkpoint; a corrupt newest falls back to it', () => {
  const dir = tempDir();
  saveCheckpoint(dir, state(1));
  saveCheckpoint(dir, state(2));
  assert.equal(loadLatestCheckpoint(dir)?.state.step, 2);
  assert.deepEqual(readdirSync(dir).sort(), [CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE].sort(), 'no temporary files left');
  const path = join(dir, CHECKPOINT_FILE);
  writeFileSync(path, readFileSync(path).subarray(0, 50)); // a torn write
  const loaded = loadLatestCheckpoint(dir);
  assert.equal(loaded?.state.step, 1);
  assert.equal(loaded?.skipped.length, 1);
  writeFileSync(join(dir, PREVIOUS_CHECKPOINT_FILE), 'x');
  assert.throws(() => loadLatestCheckpoint(dir), /no usable checkpoint/);
  assert.equal(loadLatestCheckpoint(tempDir()), undefined);
  assert.ok(existsSync(path));
});
