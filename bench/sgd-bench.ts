/**
 * What one momentum-SGD update costs (training/sgd.ts): the SIMD kernel, its copies in and out
 * included, against the JavaScript loop, for `net` (21 840 parameters) and `strong` (317 066).
 *
 *   node dist/bench/sgd-bench.js [--rounds 30]
 *
 * Prints the median µs per update over rounds of 50 updates each, the two run in turn round by round.
 * Hot caches: inside a training step, where the workers' results have just passed through, an update
 * takes longer.
 */
import { parseArgs } from 'node:util';
import { simdAvailable } from '../src/engine/simd/module.js';
import { MomentumSgd } from '../src/training/sgd.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '30' } } });
const rounds = Number(values.rounds);
if (!(rounds >= 1)) {
  console.error('--rounds must be a positive integer');
  process.exit(2);
}
if (!simdAvailable()) {
  console.error('no WebAssembly SIMD here: only the JavaScript loop runs');
  process.exit(1);
}

const UPDATES = 50;
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1];

console.log('| parameters | JavaScript loop, µs | SIMD kernel with its copies, µs | loop / kernel |');
console.log('|---:|---:|---:|---:|');
for (const params of [21_840, 317_066]) {
  const grad = Float32Array.from({ length: params }, (_, i) => Math.sin(i) * 1e-3);
  const runs = [false, true].map((simd) => ({ sgd: new MomentumSgd(params, undefined, { simd }), w: Float32Array.from({ length: params }, (_, i) => Math.cos(i)), times: [] as number[] }));
  for (let round = 0; round < rounds + 2; round++) {
    for (const run of runs) {
      const t = performance.now();
      for (let u = 0; u < UPDATES; u++) run.sgd.step(run.w, grad, 0.01, 0.5, 1 / 64);
      if (round >= 2) run.times.push(((performance.now() - t) / UPDATES) * 1000); // two warm-up rounds
    }
  }
  const [loop, kernel] = runs.map((r) => median(r.times));
  console.log(`| ${params.toLocaleString('en')} | ${loop.toFixed(1)} | ${kernel.toFixed(1)} | ${(loop / kernel).toFixed(1)}× |`);
}
