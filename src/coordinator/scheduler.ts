/**
 * One step's plan: which member computes which shard. A shard goes to the member with the least
 * work (ties to the earliest joined); a lost member's open shards are handed back for others; a
 * shard that found no member waits for one to join. A shard not back within its deadline (learnt
 * from the round trips of shards that came back) is given to a second member as well, a backup:
 * the first valid result wins. It decides; the hub sends.
 */

/** The fewest round trips before the deadline is learnt from them rather than set by the floor. */
const MIN_SAMPLES = 8;
/** Round trips remembered. */
const WINDOW = 64;

/** When a shard is late: `factor` × the median round trip of recent shards, never under `floorMs`. */
export interface DeadlinePolicy {
  floorMs: number;
  factor: number;
  /**
   * A shard this late (× the deadline, never under `hardFloorMs`) has its member given up on, backup
   * or not: no step waits forever on a member that heartbeats but never answers.
   */
  hardFactor: number;
  hardFloorMs: number;
}

/** A late shard and what to do about it. */
export type Lateness = { kind: 'backup'; shard: number; primary: string } | { kind: 'give-up'; shard: number; member: string; lateMs: number };

/** What the scheduler needs of a member record. */
export interface Candidate {
  readonly id: string;
  /** Order of joining (ties go to the earliest). */
  readonly joined: number;
}

/** One shard given to a member; `withWeights` when the member lacks this step's weights. */
export interface Assignment {
  shard: number;
  member: string;
  withWeights: boolean;
}

interface Load {
  /** Shards of the current step assigned to it and not yet returned. */
  pending: Set<number>;
  /** The weights version it holds. */
  weightsVersion: number;
}

export class Scheduler {
  private step = -1;
  private count = 0;
  /** Per shard of the step: the member it is assigned to now, and whether its result is in. */
  private readonly assignees: Array<string | undefined> = [];
  /** Per shard: the second member it was given to when late, and when it was last given out. */
  private readonly backups: Array<string | undefined> = [];
  private readonly givenAt: number[] = [];
  private readonly done: boolean[] = [];
  private readonly loads = new Map<string, Load>();
  /** Round trips (ms) of recent shards, assignment to result. */
  private readonly roundTrips: number[] = [];

  /** A new step of `count` shards: nothing assigned, nothing done. */
  begin(step: number, count: number): void {
    this.step = step;
    this.count = count;
    for (let i = 0; i < count; i++) {
      this.assignees[i] = undefined;
      this.backups[i] = undefined;
      this.done[i] = false;
    }
    for (const load of this.loads.values()) load.pending.clear();
  }

  get shards(): number {
    return this.count;
  }

  /** The member `shard` of this step is assigned to now. */
  assignee(shard: number): string | undefined {
    return shard < this.count ? this.assignees[shard] : undefined;
  }

  /** Whether `member` may send `shard`'s result: it is its assignee or its backup. */
  holds(shard: number, member: string): boolean {
    return shard < this.count && (this.assignees[shard] === member || this.backups[shard] === member);
  }

  /** The deadline a shard given out now has, in ms. */
  deadlineMs(policy: DeadlinePolicy): number {
    if (this.roundTrips.length < MIN_SAMPLES) return policy.floorMs;
    const sorted = [...this.roundTrips].sort((a, b) => a - b);
    return Math.max(policy.floorMs, policy.factor * sorted[sorted.length >> 1]);
  }

  /**
   * The shards late at `now`: those past the deadline with no backup yet (give each to another
   * member), and those past the hard limit (give up on their member).
   */
  late(now: number, policy: DeadlinePolicy): Lateness[] {
    const deadline = this.deadlineMs(policy);
    const hard = Math.max(policy.hardFloorMs, policy.hardFactor * deadline);
    const out: Lateness[] = [];
    for (let s = 0; s < this.count; s++) {
      const primary = this.assignees[s];
      if (this.done[s] || primary === undefined) continue;
      const late = now - this.givenAt[s];
      if (late > hard) out.push({ kind: 'give-up', shard: s, member: primary, lateMs: late });
      else if (late > deadline && this.backups[s] === undefined) out.push({ kind: 'backup', shard: s, primary });
    }
    return out;
  }

  /** Gives late `shard` to a second member too (the least loaded one other than its assignee). */
  assignBackup(shard: number, candidates: Iterable<Candidate>): Assignment | undefined {
    const primary = this.assignees[shard];
    const best = this.leastLoaded(candidates, primary);
    if (!best) return undefined;
    this.backups[shard] = best.id;
    return this.give(shard, best.id);
  }

  /** Open shards of this step a member currently holds. */
  pendingOf(member: string): number {
    return this.loads.get(member)?.pending.size ?? 0;
  }

  /**
   * Gives `shard` to the candidate with the least work (or to none: it then waits for a joiner).
   * `exclude` is left out of the choice.
   */
  assign(shard: number, candidates: Iterable<Candidate>, exclude?: string, now = Date.now()): Assignment | undefined {
    const best = this.leastLoaded(candidates, exclude);
    this.assignees[shard] = best?.id;
    this.backups[shard] = undefined;
    this.givenAt[shard] = now;
    if (!best) return undefined;
    return this.give(shard, best.id);
  }

  private leastLoaded(candidates: Iterable<Candidate>, exclude?: string): Candidate | undefined {
    let best: Candidate | undefined;
    let bestLoad = 0;
    for (const c of candidates) {
      if (c.id === exclude) continue;
      const load = this.pendingOf(c.id);
      if (!best || load < bestLoad || (load === bestLoad && c.joined < best.joined)) {
        best = c;
        bestLoad = load;
      }
    }
    return best;
  }

  private give(shard: number, member: string): Assignment {
    const load = this.loadOf(member);
    load.pending.add(shard);
    const withWeights = load.weightsVersion !== this.step;
    load.weightsVersion = this.step;
    return { shard, member, withWeights };
  }

  /** Shards of this step that are neither done nor assigned (they wait for a member). */
  unassigned(): number[] {
    const open: number[] = [];
    for (let s = 0; s < this.count; s++) if (!this.done[s] && this.assignees[s] === undefined) open.push(s);
    return open;
  }

  /**
   * `shard`'s result is in (from `by`, its assignee or its backup): both are done with it, and its
   * round trip teaches the deadline. Returns the member that was beaten by a backup, if one was.
   */
  complete(shard: number, by?: string, now = Date.now()): string | undefined {
    const primary = this.assignees[shard];
    const backup = this.backups[shard];
    for (const member of [primary, backup]) if (member !== undefined) this.loads.get(member)?.pending.delete(shard);
    this.done[shard] = true;
    if (by !== undefined && !(by === backup && backup !== undefined)) {
      this.roundTrips.push(now - this.givenAt[shard]);
      if (this.roundTrips.length > WINDOW) this.roundTrips.shift();
    }
    return by !== undefined && by === backup && primary !== undefined && primary !== by ? primary : undefined;
  }

  /** `shard`, done, must be computed again (its result was retracted): it is unassigned and open. */
  reopen(shard: number): void {
    if (shard >= this.count) return;
    this.done[shard] = false;
    this.assignees[shard] = undefined;
    this.backups[shard] = undefined;
  }

  isDone(shard: number): boolean {
    return shard < this.count && this.done[shard];
  }

  /**
   * `member` has left: forgets it (weights it held included) and returns its open shards, now
   * unassigned, for the hub to give to others.
   */
  release(member: string): number[] {
    const load = this.loads.get(member);
    this.loads.delete(member);
    if (!load) return [];
    const open: number[] = [];
    for (const shard of load.pending) {
      if (this.done[shard]) continue;
      if (this.backups[shard] === member) {
        // Its assignee still computes it.
        this.backups[shard] = undefined;
        continue;
      }
      if (this.backups[shard] !== undefined) {
        // The backup carries on alone.
        this.assignees[shard] = this.backups[shard];
        this.backups[shard] = undefined;
        continue;
      }
      this.assignees[shard] = undefined;
      open.push(shard);
    }
    return open;
  }

  private loadOf(member: string): Load {
    let load = this.loads.get(member);
    if (!load) {
      load = { pending: new Set(), weightsVersion: -1 };
      this.loads.set(member, load);
    }
    return load;
  }
}
