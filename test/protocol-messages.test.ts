import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createCodec } from '../src/util/codec.js';
import {
  PROTOCOL_VERSION,
  ProtocolError,
  assignedSamples,
  copyTensor,
  decodeCoordinatorMessage,
  decodeWorkerMessage,
  encode,
  encodeAssign,
  encodeWeightsFrame,
} from '../src/protocol/messages.js';

test('messages round-trip with tensors as raw bytes, received as views of the frame', () => {
  const gradSum = Float32Array.from({ length: 21840 }, (_, i) => Math.sin(i));
  const frame = encode({ type: 'result', step: 3, shard: 1, weightsVersion: 3, gradSum, lossSum: 1.5, count: 16, computeMs: 2 });
  // 4 bytes per float plus a small header: never a list of numbers.
  assert.ok(frame.length < gradSum.byteLength + 200, `frame of ${frame.length} bytes`);
  const back = decodeWorkerMessage(frame);
  assert.ok(back.type === 'result');
  // Not a copy: the gradient is read from the frame itself, and copied once, where it is kept.
  assert.equal(back.gradSum.buffer, frame.buffer);
  assert.equal(back.gradSum.byteLength, gradSum.byteLength);
  const kept = new Float32Array(gradSum.length + 5).fill(-1);
  copyTensor(back.gradSum, kept, 5);
  assert.deepEqual(kept.subarray(5), gradSum);
  assert.deepEqual([...kept.subarray(0, 5)], [-1, -1, -1, -1, -1]);

  const weights = Float32Array.of(0.5, -2, 3.25);
  const assignFrames = encodeAssign(
    { type: 'assign', step: 0, shard: 0, weightsVersion: 0, pixels: new Uint8Array(2 * 784).fill(9), labels: Uint8Array.of(7, 3), keys: Uint32Array.of(99, 4294967295) },
    encodeWeightsFrame(weights, 'float32'),
  );
  assert.equal(assignFrames.length, 2);
  const [assignFrame, weightsFrame] = assignFrames;
  const assign = decodeCoordinatorMessage(assignFrames);
  assert.ok(assign.type === 'assign' && assign.weights);
  assert.equal(assign.weightsCount, 3);
  assert.equal(assign.weights, weightsFrame, 'the weights are the second frame itself');
  assert.equal(assign.pixels!.buffer, assignFrame.buffer);
  assert.deepEqual([...assign.labels!], [7, 3]);
  assert.equal(assign.pixels!.length, 2 * 784);
  const keys = new Uint32Array(2);
  copyTensor(assign.keys, keys);
  assert.deepEqual([...keys], [99, 4294967295]);
  const w = new Float32Array(3);
  copyTensor(assign.weights, w);
  assert.deepEqual(w, weights);
  const identity = { build: '0.1.0+sha256:0123456789abcdef', engine: 'wasm (fused kernels)', models: { net: 'fedcba9876543210' } };
  const hello = decodeWorkerMessage(encode({ type: 'hello', protocol: PROTOCOL_VERSION, workerId: 'w', pid: 1, host: 'h', backend: 'wasm', device: 'cpu', ...identity }));
  assert.equal(hello.type, 'hello');
  assert.deepEqual(hello.type === 'hello' && hello.models, identity.models);
});

test('malformed and unknown messages are rejected with a reason', () => {
  assert.throws(() => decodeWorkerMessage(Buffer.from([0xc1])), ProtocolError);
  assert.throws(() => decodeWorkerMessage(encode({ type: 'heartbeat', t: 1 }).subarray(0, 3)), ProtocolError);
  assert.throws(() => decodeWorkerMessage(Buffer.from([0x92, 1, 2])), /not a map/);
  assert.throws(() => decodeWorkerMessage(encode({ type: 'welcome' } as never)), /unknown message type "welcome"/);
  const codec = createCodec();
  const numbers = codec.pack({ type: 'result', step: 0, shard: 0, weightsVersion: 0, gradSum: [1, 2, 3], lossSum: 1, count: 1, computeMs: 0 });
  assert.throws(() => decodeWorkerMessage(numbers), /without a float32 gradient/);
  assert.throws(
    () => decodeWorkerMessage(encode({ type: 'result', step: -1, shard: 0, weightsVersion: 0, gradSum: new Float32Array(1), lossSum: 1, count: 1, computeMs: 0 })),
    /bad step/,
  );
  assert.throws(() => decodeCoordinatorMessage(codec.pack({ type: 'assign', step: 0, shard: 0, weightsVersion: 0 })), /without dropout keys/);
  assert.throws(() => decodeCoordinatorMessage(encode({ type: 'assign', step: 0, shard: 0, weightsVersion: 0, keys: Uint32Array.of(5) })), /without shard data/);
  const shard = { type: 'assign', step: 0, shard: 0, weightsVersion: 0, pixels: new Uint8Array(784), labels: Uint8Array.of(1), keys: Uint32Array.of(5) } as const;
  assert.throws(() => decodeCoordinatorMessage(encode({ ...shard, keys: Uint32Array.of(5, 6) })), /mismatched sizes/);
  assert.throws(() => decodeCoordinatorMessage(encode({ ...shard, pixels: new Uint8Array(783) })), /mismatched sizes/);
  // Protocol 1 carried tensors as msgpackr typed arrays; such a message, or bytes that are not whole
  // floats, is refused.
  const typedArrayResult = codec.pack({ type: 'result', step: 0, shard: 0, weightsVersion: 0, gradSum: new Float32Array(3), lossSum: 1, count: 1, computeMs: 0 });
  assert.throws(() => decodeWorkerMessage(typedArrayResult), /without a float32 gradient/);
  const ragged = codec.pack({ type: 'result', step: 0, shard: 0, weightsVersion: 0, gradSum: new Uint8Array(7), lossSum: 1, count: 1, computeMs: 0 });
  assert.throws(() => decodeWorkerMessage(ragged), /without a float32 gradient/);
  const weightsInHeader = codec.pack({ ...shard, pixels: new Uint8Array(784), labels: Uint8Array.of(1), keys: new Uint8Array(4), weights: new Uint8Array(8) });
  assert.throws(() => decodeCoordinatorMessage(weightsInHeader), /weights in its header/);
  // A gradient sent in parts says where each part starts.
  const part = { type: 'result', step: 0, shard: 0, weightsVersion: 0, gradSum: new Float32Array(3), lossSum: 1, count: 1, computeMs: 0 } as const;
  const decoded = decodeWorkerMessage(encode({ ...part, from: 40 }));
  assert.equal(decoded.type === 'result' && decoded.from, 40);
  for (const from of [-1, 1.5, '3']) assert.throws(() => decodeWorkerMessage(encode({ ...part, from } as never)), /bad part offset/);
  // "Say hello again": its reason only, a short string; a worker never sends it.
  assert.deepEqual(decodeCoordinatorMessage(codec.pack({ type: 'rehello', reason: 'unknown', extra: 1 })), { type: 'rehello', reason: 'unknown' });
  assert.throws(() => decodeCoordinatorMessage(codec.pack({ type: 'rehello' })), /rehello without a reason/);
  assert.throws(() => decodeCoordinatorMessage(codec.pack({ type: 'rehello', reason: 'x'.repeat(501) })), /rehello without a reason/);
  assert.throws(() => decodeWorkerMessage(encode({ type: 'rehello', reason: 'r' })), /unknown message type "rehello"/);
});

test('an assignment names its samples by index or carries their pixels, never both', () => {
  const keys = Uint32Array.of(11, 12, 13);
  const byIndex = decodeCoordinatorMessage(encode({ type: 'assign', step: 3, shard: 1, weightsVersion: 3, indices: Uint32Array.of(0, 59999, 7), keys }));
  assert.ok(byIndex.type === 'assign' && byIndex.indices);
  assert.equal(assignedSamples(byIndex), 3);
  assert.equal(byIndex.pixels, undefined);
  const indices = new Uint32Array(3);
  copyTensor(byIndex.indices, indices);
  assert.deepEqual([...indices], [0, 59999, 7]);
  const codec = createCodec();
  const header = { type: 'assign', step: 0, shard: 0, weightsVersion: 0, keys: Buffer.from(keys.buffer) };
  assert.throws(() => decodeCoordinatorMessage(codec.pack({ ...header, indices: Buffer.alloc(8) })), /mismatched sizes/);
  assert.throws(() => decodeCoordinatorMessage(codec.pack({ ...header, indices: Buffer.alloc(11) })), /malformed indices/);
  assert.throws(() => decodeCoordinatorMessage(codec.pack({ ...header, indices: Buffer.alloc(12), pixels: Buffer.alloc(3 * 784), labels: Buffer.alloc(3) })), /indices and pixels/);
  // A hello names the training set its worker reads, or none.
  const hello = { type: 'hello', protocol: PROTOCOL_VERSION, workerId: 'w', pid: 1, host: 'h', backend: 'wasm', device: 'cpu', build: 'b', engine: 'e', models: {} } as const;
  const trainData = { count: 60000, digest: `sha256:${'0'.repeat(64)}` };
  assert.deepEqual((decodeWorkerMessage(encode({ ...hello, trainData })) as { trainData?: unknown }).trainData, trainData);
  for (const bad of [{ count: -1, digest: 'x' }, { count: 1 }, 'mnist', { count: 1, digest: 'x'.repeat(501) }]) {
    assert.throws(() => decodeWorkerMessage(codec.pack({ ...hello, trainData: bad })), /malformed trainData/);
  }
});

test('one weights frame serves every assignment of a step; a missing, extra or wrong-size weights frame is refused', () => {
  const shard = (n: number) => ({ type: 'assign', step: 4, shard: n, weightsVersion: 4, pixels: new Uint8Array(784).fill(n), labels: Uint8Array.of(n), keys: Uint32Array.of(n) }) as const;
  const weights = Float32Array.from({ length: 1000 }, (_, i) => i / 7);
  const frame = encodeWeightsFrame(weights, 'float32');
  const sent = [0, 1, 2].map((n) => encodeAssign(shard(n), frame));
  // Every assignment carries the same buffer object: nothing tensor-sized is encoded per worker.
  for (const frames of sent) assert.equal(frames[1], frame.bytes);
  assert.notEqual(sent[0][0], sent[1][0]);
  for (const [n, frames] of sent.entries()) {
    const m = decodeCoordinatorMessage(frames);
    assert.ok(m.type === 'assign' && m.weights);
    assert.equal(m.shard, n);
    const w = new Float32Array(weights.length);
    copyTensor(m.weights, w);
    assert.deepEqual(w, weights);
  }
  // The next step's frame is a buffer of its own: an assignment still queued keeps its weights.
  const next = encodeWeightsFrame(weights.map((v) => v + 1), 'float32');
  assert.notEqual(next.bytes.buffer, frame.bytes.buffer);
  assert.equal(new Float32Array(frame.bytes.buffer, frame.bytes.byteOffset, 1000)[7], 1);
  // A 16-bit frame: two bytes a parameter, aligned for a Uint16Array view.
  assert.equal(encodeWeightsFrame(weights, 'float16').bytes.byteLength, 2000);

  const [header, bytes] = sent[0];
  assert.throws(() => decodeCoordinatorMessage([header]), /assign without its weights frame/);
  assert.throws(() => decodeCoordinatorMessage(header), /assign without its weights frame/);
  assert.throws(() => decodeCoordinatorMessage([header, bytes, bytes]), /assign of 3 frames/);
  assert.throws(() => decodeCoordinatorMessage([header, bytes.subarray(4)]), /weights frame of 3996 bytes, not 1000 float32 values \(4000 bytes\)/);
  const half = encodeAssign(shard(0), encodeWeightsFrame(weights, 'bfloat16'));
  assert.throws(() => decodeCoordinatorMessage([half[0], bytes]), /weights frame of 4000 bytes, not 1000 bfloat16 values \(2000 bytes\)/);
  const [bare] = encodeAssign(shard(0));
  assert.equal(decodeCoordinatorMessage([bare]).type, 'assign');
  assert.throws(() => decodeCoordinatorMessage([bare, bytes]), /weights frame its header does not announce/);
  assert.throws(() => decodeCoordinatorMessage([encode({ ...shard(0), weightsCount: -1 })]), /bad weights count/);
  assert.throws(() => decodeCoordinatorMessage([encode({ type: 'heartbeat', t: 1 }), bytes]), /heartbeat message of 2 frames/);
  assert.throws(() => decodeCoordinatorMessage([]), /without frames/);
});

test('a hello of this version names its build, engine and model digests; one of another version passes, to be refused with a reason', () => {
  const bare = { type: 'hello', protocol: PROTOCOL_VERSION, workerId: 'w', pid: 1, host: 'h', backend: 'wasm', device: 'cpu' };
  const codec = createCodec();
  assert.throws(() => decodeWorkerMessage(codec.pack(bare)), /hello without build\/engine/);
  assert.throws(() => decodeWorkerMessage(codec.pack({ ...bare, build: 'b', engine: 'e', models: ['net'] })), /without model digests/);
  assert.throws(() => decodeWorkerMessage(codec.pack({ ...bare, build: 'b', engine: 'e', models: { net: 7 } })), /without model digests/);
  assert.throws(() => decodeWorkerMessage(codec.pack({ ...bare, build: 'b'.repeat(501), engine: 'e', models: {} })), /without build/);
  // An older worker's hello: the coordinator answers it with a refusal naming both versions.
  const older = decodeWorkerMessage(codec.pack({ ...bare, protocol: PROTOCOL_VERSION - 1 }));
  assert.equal(older.type === 'hello' && older.protocol, PROTOCOL_VERSION - 1);
});
