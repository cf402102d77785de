/**
 * How fast a gradient converts to float16 and bfloat16 (src/protocol/grad-dtype.ts) against
 * @petamoriken/float16's Float16Array, on the net's gradient size (21 840 values) or --size N.
 *
 *   node dist/bench/grad-dtype-bench.js [--size N] [--repeat R]
 */
import { Float16Array } from '@petamoriken/float16';
import { parseArgs } from 'node:util';
import { decodeTensor, encodeTensor } from '../src/protocol/grad-dtype.js';

const { values } = parseArgs({ options: { size: { type: 'string', default: '21840' }, repeat: { type: 'string', default: '200' } } });
const size = Number(values.size);
const repeat = Number(values.repeat);
const src = new Float32Array(size);
for (let i = 0; i < size; i++) src[i] = (Math.sin(i * 12.9898) * 43758.5453) % 1 * 0.05;

/** Median milliseconds of `repeat` calls of `fn`, after a warm-up. */
function time(fn: () => void): number {
  for (let i = 0; i < 20; i++) fn();
  const times: number[] = [];
  for (let i = 0; i < repeat; i++) {
    const t = performance.now();
    fn();
    times.push(performance.now() - t);
  }
  return times.sort((a, b) => a - b)[times.length >> 1]!;
}

const out = new Uint16Array(size);
const back = new Float32Array(size);
const rows: Array<[string, number]> = [
  ['float16 encode, library (new Float16Array)', time(() => void new Float16Array(src))],
  ['float16 encode, loop', time(() => void encodeTensor(src, 'float16', out))],
  ['bfloat16 encode, loop', time(() => void encodeTensor(src, 'bfloat16', out))],
];
const f16 = new Uint8Array(out.buffer);
encodeTensor(src, 'float16', out);
rows.push(['float16 decode, library (Float32Array.from)', time(() => void Float32Array.from(new Float16Array(out.buffer)))]);
rows.push(['float16 decode, table', time(() => decodeTensor(f16, 'float16', back))]);
rows.push(['bfloat16 decode, shift', time(() => decodeTensor(f16, 'bfloat16', back))]);
console.log(`${size} values, median of ${repeat}; node ${process.version}`);
for (const [name, ms] of rows) console.log(`${name.padEnd(46)} ${ms.toFixed(4)} ms`);
