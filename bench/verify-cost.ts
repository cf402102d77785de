/**
 * What a spot check (--verify-fraction) costs the coordinator, and how far engines differ on the
 * same shard (what the tolerance between engines, spot-check.ts ENGINE_TOLERANCE, must allow):
 * real MNIST shards of the classic model's training, recomputed as the coordinator does it.
 *
 *   node dist/bench/verify-cost.js [--engine wasm|webgpu] [--rounds 20] [--save FILE] [--against FILE]
 *
 * --save writes the fused kernels' gradients (per shard size) to FILE; --against compares with a
 * FILE another engine saved: the difference between two engines, as a spot check sees it.
 *
 * Prints, per shard size, the median ms of one recomputation plus comparison (the coordinator's
 * cost per verified shard) and the relative L2 error between the engine's fused kernels and
 * tfjs's own ops on the same shard and weights.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { compareResults } from '../src/coordinator/spot-check.js';
import { loadMnist } from '../src/data/mnist.js';
import { type EngineChoice, initEngine } from '../src/engine/backend.js';
import { createModel, initialWeights } from '../src/models/index.js';
import { createGradientComputer } from '../src/training/gradients.js';

const { values } = parseArgs({ options: { engine: { type: 'string', default: 'wasm' }, rounds: { type: 'string', default: '20' }, save: { type: 'string' }, against: { type: 'string' } } });
const rounds = Number(values.rounds);
const engine = await initEngine({ noCuda: values.engine === 'wasm', engine: values.engine as EngineChoice });
const data = loadMnist({ trainLimit: 256, testLimit: 1 });
const model = createModel('net');
const weights = initialWeights(model, 1);
// As the coordinator's recomputer: yielding, so that heartbeats are served meanwhile.
const fused = createGradientComputer(model, { yielding: true });
const ops = createGradientComputer(model, { fused: false });

console.log(`engine: ${engine.name} on ${engine.device}; model net; ${rounds} rounds per size`);
const other = values.against ? (JSON.parse(readFileSync(values.against, 'utf8')) as Record<string, { engine: string; gradSum: number[]; lossSum: number }>) : undefined;
const saved: Record<string, { engine: string; gradSum: number[]; lossSum: number }> = {};
console.log(`samples  ms/verified shard (median)  relative L2, fused kernels vs tfjs ops${other ? `  relative L2 vs ${Object.values(other)[0].engine}` : ''}`);
for (const n of [16, 64, 256]) {
  const shard = { pixels: data.train.images.subarray(0, n * 784), labels: data.train.labels.subarray(0, n), keys: Uint32Array.from({ length: n }, (_, i) => Math.imul(i + 1, 0x9e3779b9) >>> 0) };
  const reference = await ops.compute(weights, shard);
  const times: number[] = [];
  let error = 0;
  let last = reference;
  for (let r = 0; r < rounds; r++) {
    const started = performance.now();
    const recomputed = await fused.compute(weights, shard);
    const verdict = compareResults(recomputed, reference, false);
    times.push(performance.now() - started);
    error = verdict.error;
    last = recomputed;
  }
  times.sort((a, b) => a - b);
  saved[n] = { engine: engine.name, gradSum: Array.from(last.gradSum), lossSum: last.lossSum };
  const there = other?.[n];
  const across = there ? compareResults(last, { gradSum: Float32Array.from(there.gradSum), lossSum: there.lossSum }, false).error.toExponential(2) : '';
  console.log(`${String(n).padStart(7)}  ${times[times.length >> 1].toFixed(1).padStart(27)}  ${error.toExponential(2).padStart(10)}  ${across}`);
}
if (values.save) writeFileSync(values.save, JSON.stringify(saved));
