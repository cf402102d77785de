/**
 * One step's plan: which member computes which shard. A shard goes to the member with the least
 * work (ties to the earliest joined); a lost member's open shards are handed back for others; a
 * shard that found no member waits for one to join. It decides; the hub sends.
 */

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
  private readonly done: boolean[] = [];
  private readonly loads = new Map<string, Load>();

  /** A new step of `count` shards: nothing assigned, nothing done. */
  begin(step: number, count: number): void {
    this.step = step;
    this.count = count;
    for (let i = 0; i < count; i++) {
      this.assignees[i] = undefined;
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

  /** Open shards of this step a member currently holds. */
  pendingOf(member: string): number {
    return this.loads.get(member)?.pending.size ?? 0;
  }

  /**
   * Gives `shard` to the candidate with the least work (or to none: it then waits for a joiner).
   * `exclude` is left out of the choice.
   */
  assign(shard: number, candidates: Iterable<Candidate>, exclude?: string): Assignment | undefined {
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
    this.assignees[shard] = best?.id;
    if (!best) return undefined;
    const load = this.loadOf(best.id);
    load.pending.add(shard);
    const withWeights = load.weightsVersion !== this.step;
    load.weightsVersion = this.step;
    return { shard, member: best.id, withWeights };
  }

  /** Shards of this step that are neither done nor assigned (they wait for a member). */
  unassigned(): number[] {
    const open: number[] = [];
    for (let s = 0; s < this.count; s++) if (!this.done[s] && this.assignees[s] === undefined) open.push(s);
    return open;
  }

  /** `shard`'s result is in: its member is done with it. */
  complete(shard: number): void {
    const member = this.assignees[shard];
    if (member !== undefined) this.loads.get(member)?.pending.delete(shard);
    this.done[shard] = true;
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
