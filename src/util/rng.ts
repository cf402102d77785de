/**
 * The project's own seeded random numbers. Math.random is never used: every machine must draw the
 * same shuffles, initial weights and dropout masks from the same seed.
 *
 * Two kinds:
 *  - SeededRng: a sequential generator (sfc32) whose 4-word state can be saved in a checkpoint.
 *  - keyed draws (hash32 / keyedUniform): stateless, a pure function of (key, index), so a sample's
 *    dropout mask can be recomputed on whichever worker receives the sample.
 */

/** Murmur3's 32-bit finaliser: a bijective avalanche mix of one word. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Hashes a sequence of 32-bit words into one (murmur3-style combine, then finalise). */
export function hash32(...words: number[]): number {
  let h = 0x9747b28c;
  for (const w of words) {
    let k = Math.imul(w >>> 0, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) >>> 0;
  }
  return fmix32(h ^ words.length);
}

/** A uniform draw in [0, 1) that depends only on (key, stream, index). */
export function keyedUniform(key: number, stream: number, index: number): number {
  return hash32(key, stream, index) / 4294967296;
}

/** Small fast counter generator (sfc32): 128 bits of state, passes PractRand to large sizes. */
export class SeededRng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  private constructor(state: readonly number[]) {
    [this.a, this.b, this.c, this.d] = state.map((w) => w >>> 0) as [number, number, number, number];
  }

  /** A generator for one purpose: the same (seed, ...stream) always gives the same sequence. */
  static create(seed: number, ...stream: number[]): SeededRng {
    const rng = new SeededRng([hash32(seed, 1, ...stream), hash32(seed, 2, ...stream), hash32(seed, 3, ...stream), 1]);
    for (let i = 0; i < 12; i++) rng.nextUint32(); // discard the warm-up outputs
    return rng;
  }

  static fromState(state: readonly number[]): SeededRng {
    if (state.length !== 4) throw new Error(`generator state must have 4 words, got ${state.length}`);
    return new SeededRng(state);
  }

  state(): number[] {
    return [this.a, this.b, this.c, this.d];
  }

  nextUint32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }

  /** Uniform in [0, 1) with 32 bits of resolution. */
  uniform(): number {
    return this.nextUint32() / 4294967296;
  }

  /** Uniform in [low, high). */
  uniformRange(low: number, high: number): number {
    return low + (high - low) * this.uniform();
  }

  /** An unbiased integer in [0, n) (rejection sampling, n ≤ 2^32). */
  int(n: number): number {
    const limit = 4294967296 - (4294967296 % n);
    let x: number;
    do x = this.nextUint32();
    while (x >= limit);
    return x % n;
  }

  /** Fisher–Yates, in place. */
  shuffle<T extends { length: number; [i: number]: unknown }>(items: T): T {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = items[i];
      items[i] = items[j];
      items[j] = tmp;
    }
    return items;
  }
}
