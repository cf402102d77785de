/**
 * Who is in the pool: the member table. It admits a hello (or says why not), keeps each member's
 * liveness clock and says who has gone silent. It decides and reports; it never sends, spawns or
 * kills: the hub acts on what it says.
 */
import { type Hello, PROTOCOL_VERSION } from '../protocol/messages.js';
import type { DeviceDescription } from '../training/source.js';

/** A worker in the pool. `local` names the spawned child it is (the launcher's id), when it is one. */
export interface Member {
  /** Its ROUTER routing id. */
  readonly id: string;
  readonly hello: Hello;
  /** When a message from it last arrived (ms, the hub's clock). */
  lastHeard: number;
  /** The launcher's id of the local process it is; undefined for a worker that joined from elsewhere. */
  readonly local: number | undefined;
  /** Order of joining: ties in the least-work choice go to the earliest worker. */
  readonly joined: number;
}

/** What to do with a hello. */
export type Admission =
  | { kind: 'admitted'; member: Member }
  /** The id is in the pool already: a repeated hello changes nothing. */
  | { kind: 'repeated'; member: Member }
  | { kind: 'refused'; reason: string; error: string };

/** A member the clock has given up on, and why. */
export interface Silence {
  member: Member;
  reason: string;
}

export class Membership {
  private readonly members = new Map<string, Member>();
  /** Every worker that joined during the run, with what it computed on (summary.json's devices). */
  private readonly joinedDevices = new Map<string, DeviceDescription>();
  private joinOrder = 0;

  constructor(private readonly workerTimeoutMs: number) {}

  get size(): number {
    return this.members.size;
  }

  get(id: string): Member | undefined {
    return this.members.get(id);
  }

  /** The members, in order of joining. */
  all(): IterableIterator<Member> {
    return this.members.values();
  }

  /** The member that is the local process `local`, if one is. */
  byLocal(local: number): Member | undefined {
    for (const m of this.members.values()) if (m.local === local) return m;
    return undefined;
  }

  /**
   * A hello from routing id `id`. `local` is the spawned child the hello proved to be (the hub asks
   * the launcher); a child already in the pool under another id is not claimed twice.
   */
  admit(id: string, hello: Hello, now: number, local?: number): Admission {
    if (hello.protocol !== PROTOCOL_VERSION) {
      return { kind: 'refused', reason: `protocol version ${hello.protocol}, coordinator speaks ${PROTOCOL_VERSION}`, error: `worker ${id} speaks protocol ${hello.protocol}` };
    }
    const known = this.members.get(id);
    if (known) return { kind: 'repeated', member: known };
    const claimed = local !== undefined && this.byLocal(local) === undefined ? local : undefined;
    const member: Member = { id, hello, lastHeard: now, local: claimed, joined: this.joinOrder++ };
    this.members.set(id, member);
    this.joinedDevices.set(id, { id, backend: hello.backend, device: hello.device, ...(hello.adapter ? { adapter: hello.adapter } : {}) });
    return { kind: 'admitted', member };
  }

  /** A message from `id` arrived: its clock restarts. */
  heard(id: string, now: number): Member | undefined {
    const member = this.members.get(id);
    if (member) member.lastHeard = now;
    return member;
  }

  /** Members silent for longer than the timeout, in order of joining. */
  silent(now: number): Silence[] {
    const lost: Silence[] = [];
    for (const m of this.members.values()) {
      const quiet = now - m.lastHeard;
      if (quiet > this.workerTimeoutMs) lost.push({ member: m, reason: `silent for ${(quiet / 1000).toFixed(1)} s` });
    }
    return lost;
  }

  /** Takes `member` out of the pool; false when it was out already (or replaced by a later hello). */
  remove(member: Member): boolean {
    if (this.members.get(member.id) !== member) return false;
    return this.members.delete(member.id);
  }

  /** True while `member` (this record, not a later one with its id) is in the pool. */
  has(member: Member): boolean {
    return this.members.get(member.id) === member;
  }

  devices(): DeviceDescription[] {
    return [...this.joinedDevices.values()];
  }
}
