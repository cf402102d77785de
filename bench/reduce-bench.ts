/**
 * What the coordinator's reduce costs per result: the gradient copied out of its frame into the
 * shard's slot, checked for non-finite values, and added to the running sum; with the SIMD kernels
 * of the reduction arena (src/engine/simd/reduce.ts) and with the JavaScript loops.
 *
 *   node dist/bench/reduce-bench.js [--workers 64] [--rounds 30]
 *
 * Prints, per model size, the median µs per result of each part (median over rounds of a step's
 * mean), a step being `--workers` results received one after the other; then what widening a
 * gradient that travelled as float16 or bfloat16 costs (--grad-dtype), with the kernels and with
 * the protocol's decoder.
 */
import { parseArgs } from 'node:util';
import { ReductionArena, accumulate, allFiniteLoop } from '../src/engine/simd/reduce.js';
import { decodeTensor, encodeTensor } from '../src/protocol/grad-dtype.js';

const { values } = parseArgs({ options: { workers: { type: 'string', default: '64' }, rounds: { type: 'string', default: '30' } } });
const workers = Number(values.workers);
const rounds = Number(values.rounds);
if (!(workers >= 1) || !(rounds >= 1)) {
  console.error('--workers and --rounds must be positive integers');
  process.exit(2);
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1];

interface Parts {
  copy: number;
  check: number;
  add: number;
}

/** Runs `rounds` steps of `workers` results; returns the median per-result µs of each part. */
function measure(frames: Uint8Array[], slot: (i: number) => Float32Array, check: (s: Float32Array) => boolean, add: (i: number) => void, clear: () => void): Parts {
  const per: { copy: number[]; check: number[]; add: number[] } = { copy: [], check: [], add: [] };
  for (let r = 0; r < rounds + 3; r++) {
    let copy = 0;
    let checking = 0;
    let adding = 0;
    clear();
    for (let i = 0; i < frames.length; i++) {
      const t0 = performance.now();
      decodeTensor(frames[i], 'float32', slot(i));
      const t1 = performance.now();
      if (!check(slot(i))) throw new Error('a non-finite value in a finite gradient');
      const t2 = performance.now();
      add(i);
      const t3 = performance.now();
      copy += t1 - t0;
      checking += t2 - t1;
      adding += t3 - t2;
    }
    if (r < 3) continue; // warm-up
    per.copy.push((copy * 1000) / frames.length);
    per.check.push((checking * 1000) / frames.length);
    per.add.push((adding * 1000) / frames.length);
  }
  return { copy: median(per.copy), check: median(per.check), add: median(per.add) };
}

console.log(`${workers} results per step, ${rounds} steps; µs per result (median), node ${process.version}`);
console.log('| parameters | reduce | copy out of the frame | allFinite | add into the sum | allFinite + add |');
console.log('|-----------:|--------|----------------------:|----------:|-----------------:|----------------:|');
for (const params of [21840, 317066]) {
  const frames = Array.from({ length: workers }, (_, w) => {
    const g = new Float32Array(params);
    for (let i = 0; i < params; i++) g[i] = Math.sin(i * 0.37 + w) * 1e-3;
    return new Uint8Array(g.buffer);
  });
  const slots = Array.from({ length: workers }, () => new Float32Array(params));
  const sum = new Float32Array(params);
  const loops = measure(
    frames,
    (i) => slots[i],
    (s) => allFiniteLoop(s, 0, params),
    (i) => accumulate(sum, slots[i]),
    () => sum.fill(0),
  );
  const arena = new ReductionArena(params);
  arena.reserve(workers);
  const kernels = measure(
    frames,
    (i) => arena.slot(i),
    (s) => arena.allFinite(s, 0, params),
    (i) => arena.addSlot(i),
    () => arena.clearSum(),
  );
  for (const [name, p] of [['JavaScript loops', loops], [arena.simd ? 'SIMD kernels' : 'SIMD unavailable', kernels]] as const) {
    console.log(`| ${params} | ${name} | ${p.copy.toFixed(1)} | ${p.check.toFixed(1)} | ${p.add.toFixed(1)} | ${(p.check + p.add).toFixed(1)} |`);
  }
}

console.log('');
console.log('| parameters | --grad-dtype | decoder (protocol/grad-dtype.ts) | widen kernel (copy to the arena included) |');
console.log('|-----------:|--------------|---------------------------------:|------------------------------------------:|');
for (const params of [21840, 317066]) {
  const g = new Float32Array(params);
  for (let i = 0; i < params; i++) g[i] = Math.sin(i * 0.37) * 1e-3;
  const arena = new ReductionArena(params);
  arena.reserve(1);
  const slot = new Float32Array(params);
  for (const dtype of ['float16', 'bfloat16'] as const) {
    const encoded = encodeTensor(g, dtype) as Uint16Array;
    const frames = Array.from({ length: workers }, () => new Uint8Array(Uint16Array.from(encoded).buffer));
    const time = (decode: (frame: Uint8Array) => void): number => {
      const per: number[] = [];
      for (let r = 0; r < rounds + 3; r++) {
        const t = performance.now();
        for (const frame of frames) decode(frame);
        if (r >= 3) per.push(((performance.now() - t) * 1000) / frames.length);
      }
      return median(per);
    };
    const decoder = time((frame) => decodeTensor(frame, dtype, slot));
    const kernel = arena.simd ? time((frame) => arena.widen(0, frame, dtype, 0)).toFixed(1) : 'SIMD unavailable';
    console.log(`| ${params} | ${dtype} | ${decoder.toFixed(1)} | ${kernel} |`);
  }
}
