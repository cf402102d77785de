/**
 * The weights' travel buffers: one is written again only once every worker it was sent to has
 * answered for its step or a later one, and never after it was sent to a worker that left.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WeightsFrames } from '../src/coordinator/weights-frames.js';
import { encodeWeightsFrame, weightsFrameBytes } from '../src/protocol/messages.js';

test('a buffer is reused only when every worker it went to has answered since', () => {
  const frames = new WeightsFrames(16);
  const a = frames.take(0);
  frames.sent(a, 'w1');
  frames.sent(a, 'w2');
  frames.answered('w1', 0);
  const b = frames.take(1);
  assert.notEqual(b, a, 'w2 has not answered for step 0: its assignment may still be queued');
  frames.sent(b, 'w1');
  frames.answered('w2', 0);
  frames.answered('w1', 1);
  assert.equal(frames.take(2), a, 'both answered for step 0');
  assert.equal(frames.allocated, 2);
  // A stale answer (for an earlier step) proves nothing about a later buffer.
  frames.sent(a, 'w3');
  frames.sent(b, 'w3');
  frames.answered('w3', 1);
  assert.equal(frames.take(3), b, 'w3 has answered for step 1, not yet for step 2');
  assert.equal(frames.allocated, 2);
});

test('a buffer sent to a worker that left is never written again; past four kept buffers, new ones are not kept', () => {
  const frames = new WeightsFrames(16);
  const a = frames.take(0);
  frames.sent(a, 'gone');
  frames.left('gone');
  frames.answered('gone', 99);
  const seen = new Set<Buffer>();
  for (let step = 1; step <= 6; step++) {
    const b = frames.take(step);
    assert.notEqual(b, a);
    frames.sent(b, `slow-${step}`); // none of them answers
    seen.add(b);
  }
  assert.equal(seen.size, 6, 'every buffer is still in flight: each step gets a new one');
  assert.equal(frames.allocated, 7);
});

test('the weights are encoded into a kept buffer of the right size only', () => {
  const weights = Float32Array.of(1, -2, 0.5);
  const into = Buffer.alloc(weightsFrameBytes(3, 'float32'));
  const frame = encodeWeightsFrame(weights, 'float32', into);
  assert.equal(frame.bytes, into);
  assert.deepEqual(new Float32Array(into.buffer, into.byteOffset, 3), weights);
  const half = Buffer.alloc(weightsFrameBytes(3, 'float16'));
  assert.equal(encodeWeightsFrame(weights, 'float16', half).bytes, half);
  assert.equal(half.readUInt16LE(0), 0x3c00, 'float16 1.0');
  assert.throws(() => encodeWeightsFrame(weights, 'float32', Buffer.alloc(8)), /a weights frame of 8 bytes for 3 float32 values/);
});
