/**
 * Results in: checks each result against its step and shard, copies its gradient straight from the
 * received frame into the shard's slot (kept from step to step; a gradient sent in parts is put
 * together there, tail first), and adds the slots in shard order: each shard is added to the
 * step's running sum the moment it and every shard before it are in, so that only the shards after
 * the last one to arrive are left to add once the step is complete. The slots and the running sum
 * live in a reduction arena (engine/simd/reduce.ts): adding a shard and checking it for non-finite
 * values are SIMD kernel calls there, the per-worker costs of a step at the coordinator. A
 * non-finite gradient is held for a recomputation, whose verdict tells a faulty sender from a
 * diverged model. The first valid result of a shard wins: a later copy is a duplicate, ignored.
 * A result a spot check (spot-check.ts) finds false is replaced by the recomputation, and the
 * liar's other results of the step are retracted, to be computed again.
 *
 * It judges results, not senders: whether a result comes from the member its shard is assigned
 * to is the hub's question (the scheduler's plan), asked before the reducer sees it.
 */
import { type GradDtype, bytesPerElement, decodeTensor } from '../protocol/grad-dtype.js';
import type { ReceivedResult } from '../protocol/messages.js';
import { ReductionArena, type ArenaOptions } from '../engine/simd/reduce.js';
import { divergenceHint } from '../training/source.js';

/** One shard's place in a step; one per shard index, reused every step. */
interface ShardSlot {
  /** Where the parts received so far begin (the parameter count: none yet). */
  from: number;
  /** The whole gradient is in. */
  done: boolean;
  /** A non-finite result for it awaits its recomputation's verdict. */
  verifying: boolean;
  lossSum: number;
  count: number;
}

/** What became of a result. */
export type Verdict =
  /** The whole shard is in. */
  | { kind: 'complete' }
  /** A part is in; the rest of the shard is still to come. */
  | { kind: 'part' }
  /** The shard is in (or on its way) already: this copy is ignored. */
  | { kind: 'duplicate' }
  /** Malformed for its shard: its sender cannot be trusted with more. */
  | { kind: 'invalid'; problem: string }
  /** Non-finite: recompute the shard, then call `judge` with the outcome. */
  | { kind: 'verify' };

/** The recomputation's verdict on a non-finite result. */
export type Judgement = { kind: 'diverged'; message: string; error: string } | { kind: 'faulty'; reason: string; error: string };

export class Reducer {
  private readonly slots: ShardSlot[] = [];
  /** The slots' gradient buffers (parts are put together there, tail first) and the running sum. */
  private readonly arena: ReductionArena;
  private step = -1;
  private expected: readonly { labels: { length: number } }[] = [];
  private remaining = 0;
  /** How many shards, from shard 0 on, this step's running sum holds. */
  private summed = 0;

  /**
   * `gradDtype`: what every result's gradient must travel as (--grad-dtype). `arena`: SIMD kernels
   * or not (tests; default: where WebAssembly SIMD runs).
   */
  constructor(
    private readonly params: number,
    private readonly gradDtype: GradDtype = 'float32',
    arena: ArenaOptions = {},
  ) {
    this.arena = new ReductionArena(params, arena);
  }

  /** Whether the reduction runs on the SIMD kernels. */
  get simd(): boolean {
    return this.arena.simd;
  }

  /**
   * A new step: the first `shards.length` slots are emptied (created the first time a step has this
   * many: the arena grows once, before any result of the step is in). The shard-ordered sum is
   * built as the shards come in; `reduce(out)` finishes it and copies it out.
   */
  begin(step: number, shards: readonly { labels: { length: number } }[]): void {
    this.step = step;
    this.expected = shards;
    this.remaining = shards.length;
    this.summed = 0;
    this.arena.reserve(shards.length);
    while (this.slots.length < shards.length) this.slots.push({ from: this.params, done: false, verifying: false, lossSum: 0, count: 0 });
    for (let i = 0; i < shards.length; i++) {
      const slot = this.slots[i];
      slot.from = this.params;
      slot.done = false;
      slot.verifying = false;
    }
  }

  /** How many shards, from shard 0 on, are added to the step's running sum already. */
  get summedShards(): number {
    return this.summed;
  }

  /** Shards still to come. */
  get outstanding(): number {
    return this.remaining;
  }

  /** `shard` goes to another member: parts from an earlier one do not count. A shard that is in stays in. */
  reopen(shard: number): void {
    const slot = this.slots[shard];
    if (slot.done) return;
    slot.from = this.params;
    slot.verifying = false;
  }

  /** Takes a result for `r.shard` of this step (the hub has checked the step and the sender). */
  accept(r: ReceivedResult): Verdict {
    const slot = this.slots[r.shard];
    const from = r.from ?? 0;
    const dtype = r.gradDtype ?? 'float32';
    const length = r.gradSum.byteLength / bytesPerElement(dtype);
    // The first valid result wins: a copy of what is in already changes nothing and says nothing
    // against its sender (a retry, a replay, a backup that came second).
    if (slot.done || slot.verifying || (from >= slot.from && from + length <= this.params && length > 0)) return { kind: 'duplicate' };
    const problem = dtype === this.gradDtype ? this.check(r, from, length) : `a ${dtype} gradient, this run's travel as ${this.gradDtype}`;
    if (problem) return { kind: 'invalid', problem };
    // Straight from the received frame into the shard's buffer (widened to float32), kept from step to step.
    const buffer = this.arena.slot(r.shard);
    if (dtype === 'float32' || !this.arena.simd) decodeTensor(r.gradSum, dtype, buffer, from);
    else this.arena.widen(r.shard, r.gradSum, dtype, from);
    if (!Number.isFinite(r.lossSum) || !this.arena.allFinite(buffer, from, slot.from)) {
      // Either the sender is faulty or the model has diverged: recomputing the shard tells which.
      // It may run on a GPU, so the verdict comes later; the shard stays open until then.
      slot.verifying = true;
      return { kind: 'verify' };
    }
    slot.from = from;
    if (from > 0) return { kind: 'part' };
    slot.done = true;
    slot.lossSum = r.lossSum;
    slot.count = r.count;
    this.remaining--;
    this.sumReadyShards();
    return { kind: 'complete' };
  }

  /** The result in for `shard` (its gradient is the slot's buffer: copy it before it changes, or the next step begins). */
  result(shard: number): { gradSum: Float32Array; lossSum: number; count: number } {
    const slot = this.slots[shard];
    return { gradSum: this.arena.slot(shard), lossSum: slot.lossSum, count: slot.count };
  }

  /** A spot check found `shard`'s result false: the coordinator's recomputation takes its place. */
  replace(shard: number, gradSum: Float32Array, lossSum: number): void {
    const slot = this.slots[shard];
    this.arena.slot(shard).set(gradSum);
    slot.lossSum = lossSum;
    this.unsum(shard);
  }

  /**
   * `shard` came from a sender found lying on another shard: its result no longer counts, and the
   * shard is open again for another member (see `reopen`).
   */
  retract(shard: number): void {
    const slot = this.slots[shard];
    if (!slot.done) return;
    slot.done = false;
    slot.from = this.params;
    slot.verifying = false;
    this.remaining++;
    this.unsum(shard);
  }

  /**
   * The verdict on a non-finite result for `shard`: reproduced by the recomputation, the model has
   * diverged and the run stops; not reproduced, its sender is faulty (the shard goes to another).
   */
  judge(step: number, shard: number, reproduced: boolean): Judgement {
    if (reproduced) {
      return {
        kind: 'diverged',
        message: `training diverged at step ${step}: non-finite gradients for shard ${shard} (${divergenceHint(this.gradDtype)})`,
        error: `non-finite gradient for shard ${shard} of step ${step}: the model diverged`,
      };
    }
    return { kind: 'faulty', reason: 'sent a non-finite gradient that recomputation does not reproduce', error: `non-finite gradient for shard ${shard} of step ${step}` };
  }

  /**
   * Writes into `out` the shards' gradients added in shard order, ((0 + g₀) + g₁) + … in float32
   * (what deterministic mode rests on), and returns the summed loss and sample count.
   */
  reduce(out: Float32Array): { lossSum: number; count: number } {
    const n = this.expected.length;
    this.sumReadyShards();
    if (this.summed !== n) throw new Error(`reduce with ${n - this.summed} of ${n} shards not in`);
    if (n === 0) this.arena.clearSum();
    out.set(this.arena.sum);
    let lossSum = 0;
    let count = 0;
    for (let i = 0; i < n; i++) {
      lossSum += this.slots[i].lossSum;
      count += this.slots[i].count;
    }
    return { lossSum, count };
  }

  /**
   * `shard`'s result changed after it was in (a spot check replaced or retracted it): if it is in the
   * running sum already, the sum starts again from shard 0, from the slots, which hold every result
   * that counts. The bits are those of a sum made once at the end.
   */
  private unsum(shard: number): void {
    if (shard < this.summed) this.summed = 0;
  }

  /**
   * Adds to the running sum every shard that is in and follows, in shard order, those added
   * already: ((0 + g₀) + g₁) + … in float32, so the bits do not depend on when the shards arrive.
   * A shard that is in stays in (`reopen` leaves it); one that a spot check replaces or retracts
   * restarts the sum (`unsum`).
   */
  private sumReadyShards(): void {
    const n = this.expected.length;
    while (this.summed < n && this.slots[this.summed].done) {
      if (this.summed === 0) this.arena.clearSum();
      this.arena.addSlot(this.summed);
      this.summed++;
    }
  }

  /** What is wrong with a result for its shard, or undefined when it is sound. */
  private check(r: ReceivedResult, from: number, length: number): string | undefined {
    if (r.weightsVersion !== this.step) return `computed on weights v${r.weightsVersion}, expected v${this.step}`;
    // A whole gradient is welcome whatever parts came before it (a backup's, after its assignee's tail).
    const end = from === 0 && length === this.params ? this.params : this.slots[r.shard].from;
    if (from + length !== end || from >= end) return `gradient part [${from}, ${from + length}), expected one ending at ${end}`;
    const expected = this.expected[r.shard].labels.length;
    if (r.count !== expected) return `counts ${r.count} samples, the shard has ${expected}`;
    return undefined;
  }
}
