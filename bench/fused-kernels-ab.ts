/**
 * A/B of two builds of the fused engine's kernels (src/engine/simd/assembly → kernels.wasm) on
 * the convolutions of `net`, interleaved in one process so that both see the same machine: on a
 * shared VM whose speed drifts by 10–20% within minutes, runs minutes apart cannot be compared.
 * It first checks that both builds give the same bits on the same inputs (deterministic mode's
 * digests depend on it), then times each kernel in rounds, A then B then A…, and prints medians
 * in ms per 32-sample shard.
 *
 *   cp dist/src/engine/simd/kernels.wasm /tmp/before.wasm     # then change the kernels, npm run build:wasm
 *   node dist/bench/fused-kernels-ab.js /tmp/before.wasm dist/src/engine/simd/kernels.wasm [--rounds 8]
 *
 * Exit status: 0 when the bits agree, 1 when they differ, 2 on bad arguments.
 */
import { readFileSync } from 'node:fs';
import type { SimdKernels as Kernels } from '../src/engine/simd/module.js';
import { SeededRng } from '../src/util/rng.js';

/** Samples per call: one chunk of the fused engine (step.ts's DEFAULT_CHUNK). */
const CHUNK = 8;
const SHARD = 32;

// Buffers in floats, NHWC as step.ts lays them out: conv1 1→10 (output padded to 12); conv2 reads its 10
// input channels without padding and writes 20; its input gradient is written padded to 12.
const SIZES = {
  x1: CHUNK * 28 * 28,
  w1: 25 * 12,
  b1: 12,
  y1: CHUNK * 24 * 24 * 12,
  dw1: 25 * 12,
  x2: CHUNK * 12 * 12 * 10,
  w2: 25 * 10 * 20,
  b2: 20,
  y2: CHUNK * 8 * 8 * 20,
  dw2: 25 * 10 * 20,
  turned: 25 * 20 * 12,
  zeroBias: 12,
  dx2: CHUNK * 12 * 12 * 12,
} as const;
type Buffer = keyof typeof SIZES;

interface Op {
  name: string;
  out: Buffer;
  run: (k: Kernels, p: Record<Buffer, number>) => void;
}

const OPS: Op[] = [
  { name: 'conv1 forward', out: 'y1', run: (k, p) => k.convForward(p.x1, CHUNK, 28, 28, 1, p.w1, p.b1, 5, 0, 12, p.y1) },
  { name: 'conv1 weight gradient', out: 'dw1', run: (k, p) => k.convFilterGrad(p.x1, CHUNK, 28, 28, 1, 1, p.y1, 5, 0, 12, p.dw1) },
  { name: 'conv2 forward', out: 'y2', run: (k, p) => k.convForward(p.x2, CHUNK, 12, 12, 10, p.w2, p.b2, 5, 0, 20, p.y2) },
  { name: 'conv2 weight gradient', out: 'dw2', run: (k, p) => k.convFilterGrad(p.x2, CHUNK, 12, 12, 10, 10, p.y2, 5, 0, 20, p.dw2) },
  { name: 'conv2 input gradient', out: 'dx2', run: (k, p) => k.convForward(p.y2, CHUNK, 8, 8, 20, p.turned, p.zeroBias, 5, 4, 12, p.dx2) },
];

interface Build {
  file: string;
  kernels: Kernels;
  memory: WebAssembly.Memory;
  ptr: Record<Buffer, number>;
}

function inputs(): Record<Buffer, Float32Array> {
  const rng = SeededRng.create(1);
  const data = {} as Record<Buffer, Float32Array>;
  for (const [name, size] of Object.entries(SIZES) as Array<[Buffer, number]>) data[name] = Float32Array.from({ length: size }, () => rng.uniformRange(-1, 1));
  data.zeroBias.fill(0);
  return data;
}

function load(file: string, data: Record<Buffer, Float32Array>): Build {
  const memory = new WebAssembly.Memory({ initial: 64 });
  const instance = new WebAssembly.Instance(new WebAssembly.Module(readFileSync(file)), {
    env: { memory, abort: () => { throw new Error(`${file}: kernel aborted`); } },
  });
  const kernels = instance.exports as unknown as Kernels;
  const ptr = {} as Record<Buffer, number>;
  let offset = (kernels.heapBase() + 63) & ~63;
  for (const name of Object.keys(SIZES) as Buffer[]) {
    ptr[name] = offset;
    offset += (SIZES[name] * 4 + 63) & ~63;
  }
  if (offset > memory.buffer.byteLength) throw new Error('the buffers do not fit the memory');
  for (const name of Object.keys(SIZES) as Buffer[]) new Float32Array(memory.buffer, ptr[name], SIZES[name]).set(data[name]);
  return { file, kernels, memory, ptr };
}

/** Runs `op` once from the same starting output (the gradient kernels accumulate) and returns its bits. */
function bitsOf(build: Build, op: Op, data: Record<Buffer, Float32Array>): Uint32Array {
  const view = new Float32Array(build.memory.buffer, build.ptr[op.out], SIZES[op.out]);
  view.set(data[op.out]);
  op.run(build.kernels, build.ptr);
  return new Uint32Array(view.slice().buffer);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[sorted.length >> 1];
}

function main(): number {
  const args = process.argv.slice(2);
  const roundsAt = args.indexOf('--rounds');
  const rounds = roundsAt >= 0 ? Number(args[roundsAt + 1]) : 8;
  const files = args.filter((a, i) => !a.startsWith('--') && (roundsAt < 0 || i !== roundsAt + 1));
  if (files.length !== 2 || !Number.isInteger(rounds) || rounds < 1) {
    console.error('usage: node dist/bench/fused-kernels-ab.js A.wasm B.wasm [--rounds N]');
    return 2;
  }
  const data = inputs();
  let builds: Build[];
  try {
    builds = files.map((f) => load(f, data));
  } catch (e) {
    console.error(`fused-kernels-ab: ${(e as Error).message}`);
    return 2;
  }

  let differ = false;
  for (const op of OPS) {
    const [a, b] = builds.map((build) => bitsOf(build, op, data));
    let count = 0;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) count++;
    if (count) differ = true;
    console.log(`${op.name.padEnd(22)} ${count ? `bits DIFFER in ${count} of ${a.length} values` : `same bits (${a.length} values)`}`);
  }

  const calls = 200;
  const times = builds.map(() => OPS.map((): number[] => []));
  for (let r = 0; r < rounds; r++) {
    // Alternate which build goes first: the second of a pair tends to run a little faster.
    const order = r % 2 === 0 ? [0, 1] : [1, 0];
    for (const bi of order) {
      OPS.forEach((op, oi) => {
        const t0 = performance.now();
        for (let c = 0; c < calls; c++) op.run(builds[bi].kernels, builds[bi].ptr);
        times[bi][oi].push(((performance.now() - t0) / calls) * (SHARD / CHUNK));
      });
    }
  }
  console.log(`\nms per ${SHARD}-sample shard, median of ${rounds} rounds of ${calls} calls each`);
  console.log(`${'kernel'.padEnd(22)} ${'A'.padStart(7)} ${'B'.padStart(7)}  B/A`);
  OPS.forEach((op, oi) => {
    const [a, b] = builds.map((_, bi) => median(times[bi][oi]));
    console.log(`${op.name.padEnd(22)} ${a.toFixed(3).padStart(7)} ${b.toFixed(3).padStart(7)}  ${(b / a).toFixed(2)}`);
  });
  console.log(`\nA = ${files[0]}\nB = ${files[1]}`);
  return differ ? 1 : 0;
}

process.exitCode = main();
