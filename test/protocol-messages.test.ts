import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PROTOCOL_VERSION, ProtocolError, decodeCoordinatorMessage, decodeWorkerMessage, encode } from '../src/protocol/messages.js';

test('messages round-trip with tensors as binary typed arrays', () => {
  const gradSum = Float32Array.from({ length: 21840 }, (_, i) => Math.sin(i));
  const frame = encode({ type: 'result', step: 3, shard: 1, weightsVersion: 3, gradSum, lossSum: 1.5, count: 16, computeMs: 2 });
  // 4 bytes per float plus a small header: never a list of numbers.
  assert.ok(frame.length < gradSum.byteLength + 200, `frame of ${frame.length} bytes`);
  const back = decodeWorkerMessage(frame);
  assert.equal(back.type, 'result');
  assert.ok(back.type === 'result' && back.gradSum instanceof Float32Array);
  assert.deepEqual(back.type === 'result' && back.gradSum, gradSum);

  const assign = decodeCoordinatorMessage(
    encode({ type: 'assign', step: 0, shard: 0, weightsVersion: 0, pixels: new Uint8Array(784), labels: Uint8Array.of(7), keys: Uint32Array.of(99) }),
  );
  assert.ok(assign.type === 'assign' && assign.keys instanceof Uint32Array && assign.keys[0] === 99);
  const hello = decodeWorkerMessage(encode({ type: 'hello', protocol: PROTOCOL_VERSION, workerId: 'w', pid: 1, host: 'h', backend: 'wasm', device: 'cpu' }));
  assert.equal(hello.type, 'hello');
});

test('malformed and unknown messages are rejected with a reason', () => {
  assert.throws(() => decodeWorkerMessage(Buffer.from([0xc1])), ProtocolError);
  assert.throws(() => decodeWorkerMessage(encode({ type: 'heartbeat', t: 1 }).subarray(0, 3)), ProtocolError);
  assert.throws(() => decodeWorkerMessage(Buffer.from([0x92, 1, 2])), /not a map/);
  assert.throws(() => decodeWorkerMessage(encode({ type: 'welcome' } as never)), /unknown message type "welcome"/);
  const numbers = encode({ type: 'result', step: 0, shard: 0, weightsVersion: 0, gradSum: [1, 2, 3] as never, lossSum: 1, count: 1, computeMs: 0 });
  assert.throws(() => decodeWorkerMessage(numbers), /without a float32 gradient/);
  assert.throws(
    () => decodeWorkerMessage(encode({ type: 'result', step: -1, shard: 0, weightsVersion: 0, gradSum: new Float32Array(1), lossSum: 1, count: 1, computeMs: 0 })),
    /bad step/,
  );
  assert.throws(() => decodeCoordinatorMessage(encode({ type: 'assign', step: 0, shard: 0, weightsVersion: 0 } as never)), /without shard data/);
  // A gradient sent in parts says where each part starts.
  const part = { type: 'result', step: 0, shard: 0, weightsVersion: 0, gradSum: new Float32Array(3), lossSum: 1, count: 1, computeMs: 0 } as const;
  const decoded = decodeWorkerMessage(encode({ ...part, from: 40 }));
  assert.equal(decoded.type === 'result' && decoded.from, 40);
  for (const from of [-1, 1.5, '3']) assert.throws(() => decodeWorkerMessage(encode({ ...part, from } as never)), /bad part offset/);
});
