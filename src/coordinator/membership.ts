/**
 * Who is in the pool: the member table. It admits a hello (or says why not), keeps each member's
 * liveness clock and says who has gone silent. It decides and reports; it never sends, spawns or
 * kills: the hub acts on what it says.
 *
 * Identity: a hello names the worker's build, engine and model digests. A worker whose digest of
 * the run's model differs from the coordinator's computes another model's gradients: always
 * refused. In deterministic mode a worker of another engine, or of another build, is refused too
 * (mixed engines, or code that adds in another order, break bit-identity); otherwise it is
 * admitted, and what differs is logged and recorded with its device.
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
  /** The name of its own key pair (`keygen --worker NAME`), proven in its hello; undefined for a shared or no key. */
  readonly keyName: string | undefined;
}

/** How logs and summary.json name a member: its key's name where it has one, else its routing id. */
export function memberName(m: Pick<Member, 'id' | 'keyName'>): string {
  return m.keyName ?? m.id;
}

/** What the coordinator expects of a worker's hello. */
export interface RunIdentity {
  /** The coordinator's build (util/build.ts buildId). */
  build: string;
  /** The run's model, and the coordinator's digest of it. */
  model: string;
  modelDigest: string;
  /** --deterministic: another engine or build is refused rather than admitted with a warning. */
  deterministic: boolean;
  /**
   * The engine every worker of a deterministic run must have (engineIdentity): the coordinator's
   * own when its --engine names one. Absent (--engine auto): the first admitted worker's, since
   * the coordinator may compute on another (a CPU-only coordinator pod with GPU workers).
   */
  engine?: string;
}

/** What to do with a hello. */
export type Admission =
  /** `differs`: what of the worker's identity differs from the run's (admitted all the same). */
  | { kind: 'admitted'; member: Member; differs: string[] }
  /** The id is in the pool already: a repeated hello changes nothing. */
  | { kind: 'repeated'; member: Member }
  | { kind: 'refused'; reason: string; error: string; putOut?: boolean };

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
  /** The engine a deterministic run's workers share (see RunIdentity.engine). */
  private runEngine: string | undefined;
  /** Routing ids and key names shut out for the rest of the run (caught lying, or revoked). */
  private readonly bannedIds = new Set<string>();
  private readonly bannedKeys = new Set<string>();

  /** Without `identity`, hellos are checked for their protocol version only. */
  constructor(
    private readonly workerTimeoutMs: number,
    private readonly identity?: RunIdentity,
  ) {
    this.runEngine = identity?.engine;
  }

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
  admit(id: string, hello: Hello, now: number, local?: number, keyName?: string): Admission {
    if (hello.protocol !== PROTOCOL_VERSION) {
      return { kind: 'refused', reason: `protocol version ${hello.protocol}, coordinator speaks ${PROTOCOL_VERSION}`, error: `worker ${id} speaks protocol ${hello.protocol}` };
    }
    const banned = keyName !== undefined && this.bannedKeys.has(keyName) ? `key ${keyName}` : this.bannedIds.has(id) ? `worker ${id}` : undefined;
    if (banned) {
      return { kind: 'refused', reason: `${banned} was put out of this run and may not rejoin it`, error: `refused ${banned}: put out of this run earlier`, putOut: true };
    }
    const check = this.checkIdentity(hello);
    if ('refused' in check) return { kind: 'refused', reason: check.refused, error: `worker ${id} refused: ${check.refused}` };
    const known = this.members.get(id);
    if (known) return { kind: 'repeated', member: known };
    const claimed = local !== undefined && this.byLocal(local) === undefined ? local : undefined;
    const member: Member = { id, hello, lastHeard: now, local: claimed, joined: this.joinOrder++, keyName };
    this.members.set(id, member);
    if (this.identity) this.runEngine ??= hello.engine;
    this.joinedDevices.set(id, {
      id: memberName(member),
      backend: hello.backend,
      device: hello.device,
      ...(hello.adapter ? { adapter: hello.adapter } : {}),
      ...(hello.engine ? { engine: hello.engine } : {}),
      ...(hello.build ? { build: hello.build } : {}),
      ...(check.differs.length > 0 ? { differs: check.differs } : {}),
    });
    return { kind: 'admitted', member, differs: check.differs };
  }

  /** Why `hello` is refused, or what of it differs from the run (admitted all the same). */
  private checkIdentity(hello: Hello): { refused: string } | { differs: string[] } {
    const run = this.identity;
    if (!run) return { differs: [] };
    const digest = hello.models[run.model];
    if (digest === undefined) return { refused: `this worker's build (${hello.build}) does not know model ${run.model}` };
    if (digest !== run.modelDigest) {
      return { refused: `model ${run.model} differs: this worker's digest ${digest}, the coordinator's ${run.modelDigest} (worker build ${hello.build}, coordinator build ${run.build})` };
    }
    const differs: string[] = [];
    const engine = this.runEngine;
    if (engine !== undefined && hello.engine !== engine) {
      if (run.deterministic) return { refused: `engine ${hello.engine} differs from the run's ${engine}: --deterministic needs one engine on every worker` };
      differs.push(`engine ${hello.engine}, the run's ${engine}`);
    }
    if (hello.build !== run.build) {
      if (run.deterministic) return { refused: `build ${hello.build} differs from the coordinator's ${run.build}: --deterministic needs one build` };
      differs.push(`build ${hello.build}, the coordinator's ${run.build}`);
    }
    return { differs };
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

  /** Shuts `member` out for the rest of the run: its routing id, and its key where it has its own. */
  ban(member: Pick<Member, 'id' | 'keyName'>): void {
    this.bannedIds.add(member.id);
    if (member.keyName !== undefined) this.bannedKeys.add(member.keyName);
  }

  /** True when routing id `id` was shut out of the run (see ban). */
  isBanned(id: string): boolean {
    return this.bannedIds.has(id);
  }

  devices(): DeviceDescription[] {
    return [...this.joinedDevices.values()];
  }
}
