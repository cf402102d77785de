/**
 * The buffers the step's weights travel in, kept from step to step. zeromq.js sends a buffer
 * without copying it and holds it until its I/O thread has written it out, however long a slow
 * worker's queue takes: a buffer may be written again only once every worker it was sent to is
 * known to have it. A result from a worker for that step or a later one says so (ZeroMQ keeps a
 * connection's messages in order, and a result means its assignment arrived). A worker that leaves
 * the pool may still have the buffer queued: the buffer is then never written again, and a new one
 * takes its place.
 *
 * Measured on the 2 vCPU Xeon (2026-11-30): a new buffer for `net`'s 87 KB of weights cost 68 µs per
 * step (the first write into fresh memory), writing into a kept one 2.4 µs; a model of 10 M
 * parameters would allocate 40 MB a step.
 */

/** One buffer and who may still be reading it. */
interface Slot {
  bytes: Buffer;
  /** The step whose weights it holds (-1: none yet). */
  step: number;
  /** Workers it was sent to that have not answered since. */
  holders: Set<string>;
  /** Sent to a worker that left before answering: never written again. */
  lost: boolean;
}

/** The buffers kept at most; past that a step's frame is allocated and forgotten. */
const KEPT = 4;

export class WeightsFrames {
  private readonly slots: Slot[] = [];
  /** Buffers allocated since the start (kept or not), for tests and statistics. */
  allocated = 0;

  /** `byteLength`: the size of one step's weights as they travel. */
  constructor(private readonly byteLength: number) {}

  /**
   * A buffer for step `step`'s weights, free to be written: a kept one no worker may still be
   * reading, else a new one (kept if there is room).
   */
  take(step: number): Buffer {
    let slot = this.slots.find((s) => !s.lost && s.holders.size === 0 && s.step !== step);
    if (!slot) {
      this.allocated++;
      // Its own ArrayBuffer (not Node's shared pool): aligned for a Uint16Array view.
      slot = { bytes: Buffer.allocUnsafeSlow(this.byteLength), step, holders: new Set(), lost: false };
      const lostAt = this.slots.findIndex((s) => s.lost);
      if (lostAt >= 0) this.slots[lostAt] = slot;
      else if (this.slots.length < KEPT) this.slots.push(slot);
      else return slot.bytes; // every kept buffer is still in flight: this one is not kept
    }
    slot.step = step;
    return slot.bytes;
  }

  /** `bytes` (from `take`) was handed to ZeroMQ for worker `id`. */
  sent(bytes: Buffer, id: string): void {
    this.slots.find((s) => s.bytes === bytes)?.holders.add(id);
  }

  /** Worker `id` answered for `step`: every buffer of that step or an earlier one has reached it. */
  answered(id: string, step: number): void {
    for (const s of this.slots) if (s.step <= step) s.holders.delete(id);
  }

  /** Worker `id` left the pool: what it was sent may still be queued for it. */
  left(id: string): void {
    for (const s of this.slots) if (s.holders.has(id)) s.lost = true;
  }
}
