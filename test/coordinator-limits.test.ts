/**
 * Message sizes against the message limit, known at start: the largest frames a run sends and
 * receives, the one-line refusal, and the largest shard as the training loop cuts the batch.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { largestFrames, messageLimitProblem } from '../src/coordinator/limits.js';
import { WorkerPool } from '../src/coordinator/pool.js';
import { largestShard } from '../src/coordinator/train.js';
import { createModel, paramLayout } from '../src/models/index.js';
import { MAX_MESSAGE_BYTES, encode, encodeAssign, encodeWeightsFrame } from '../src/protocol/messages.js';
import { UserError } from '../src/util/errors.js';
import { createLogger } from '../src/util/logger.js';

/** The frames themselves, as the hub and a worker encode them. */
function realFrames(params: number, n: number, numbers: number): { assign: number; result: number } {
  const assign = encodeAssign(
    { type: 'assign', step: numbers, shard: numbers, weightsVersion: numbers, pixels: new Uint8Array(n * 28 * 28), labels: new Uint8Array(n), keys: new Uint32Array(n) },
    encodeWeightsFrame(new Float32Array(params), 'float32'),
  ).reduce((bytes, frame) => bytes + frame.length, 0);
  const result = encode({ type: 'result', step: numbers, shard: numbers, weightsVersion: numbers, gradSum: new Float32Array(params), from: numbers, lossSum: 123.456, count: n || 1, computeMs: 7.25 }).length;
  return { assign, result };
}

test('the computed frame sizes bound the real frames, to within the numbers\' widths', () => {
  // Tensors across msgpack's bin8 / bin16 / bin32 boundaries, and the models' real sizes.
  const params = [1, 63, 64, 16383, 16384, 21840, paramLayout(createModel('lenet')).total, paramLayout(createModel('strong')).total];
  for (const p of params) {
    for (const n of [0, 1, 16, 83, 84, 1000]) {
      const bound = largestFrames(p, n);
      for (const numbers of [0, 70_000, Number.MAX_SAFE_INTEGER]) {
        const real = realFrames(p, n, numbers);
        assert.ok(real.assign <= bound.assign && bound.assign - real.assign <= 32, `assign, ${p} params, ${n} samples: ${real.assign} vs ${bound.assign}`);
        assert.ok(real.result <= bound.result && bound.result - real.result <= 40, `result, ${p} params: ${real.result} vs ${bound.result}`);
      }
      assert.equal(bound.largest, Math.max(bound.assign, bound.result));
    }
  }
  // With the widest numbers the bound is the frame, byte for byte.
  const exact = realFrames(21840, 16, Number.MAX_SAFE_INTEGER);
  assert.equal(largestFrames(21840, 16).assign, exact.assign);
});

test('the bundled models fit; a frame past the limit is refused in one line naming the model size and the limit', () => {
  assert.equal(messageLimitProblem('net', 21840, 64), undefined);
  assert.equal(messageLimitProblem('strong', paramLayout(createModel('strong')).total, 60000), undefined, 'the whole of MNIST in one shard still fits');
  // A 16.7 M-parameter model: its weights are 64 MiB on their own.
  const huge = messageLimitProblem('big', 16_777_216, 16);
  assert.ok(huge);
  assert.doesNotMatch(huge, /\n/);
  assert.match(huge, /^model big has 16,777,216 parameters \(64\.0 MiB of weights\); with shards of up to 16 samples a message takes 64\.0 MiB, over the 64\.0 MiB message limit: the weights alone do not fit in one message$/);
  // Just over: the weights fit, the shard's images do not.
  const wide = messageLimitProblem('net', 21840, 90_000);
  assert.match(wide ?? '', /^model net has 21,840 parameters \(0\.1 MiB of weights\); with shards of up to 90000 samples a message takes 67\.\d MiB, over the 64\.0 MiB message limit: fewer samples per shard would fit/);
  // The boundary: the largest frame exactly at the limit passes, one byte over does not.
  const at = largestFrames(1000, 10).largest;
  assert.equal(messageLimitProblem('m', 1000, 10, at), undefined);
  assert.ok(messageLimitProblem('m', 1000, 10, at - 1));
  assert.equal(MAX_MESSAGE_BYTES, 64 * 2 ** 20);
});

test('the pool refuses such a run at start, before it binds or spawns anything', async () => {
  const logger = createLogger({ name: 'test', terminalLevel: 'fatal' });
  let spawned = 0;
  const start = WorkerPool.start({
    listen: 'tcp://127.0.0.1:*',
    workers: 2,
    spawn: true,
    gpus: 0,
    noCuda: true,
    model: 'big',
    params: 17_000_000,
    maxShardSamples: 64,
    logger,
    connectTimeoutMs: 1000,
    spawnProcess: () => {
      spawned++;
      throw new Error('must not spawn');
    },
  });
  await assert.rejects(start, (e: Error) => e instanceof UserError && /^model big has 17,000,000 parameters .* over the 64\.0 MiB message limit/.test(e.message));
  assert.equal(spawned, 0);
});

test('the largest shard: fixed shards in deterministic mode, one slice per worker in fast mode, never more than the data', () => {
  assert.equal(largestShard({ batchSize: 64, deterministic: true, shardSize: 16, workers: 3 }, 60000), 16);
  assert.equal(largestShard({ batchSize: 10, deterministic: true, shardSize: 16, workers: 3 }, 60000), 10);
  assert.equal(largestShard({ batchSize: 64, deterministic: false, shardSize: 16, workers: 3 }, 60000), 22);
  assert.equal(largestShard({ batchSize: 64, deterministic: false, shardSize: 16, workers: 1 }, 60000), 64);
  assert.equal(largestShard({ batchSize: 100_000, deterministic: false, shardSize: 16, workers: 1 }, 60000), 60000);
  assert.equal(largestShard({ batchSize: 64, deterministic: false, shardSize: 16, workers: 0 }, 100), 64);
});
