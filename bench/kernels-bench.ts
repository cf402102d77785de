/**
 * Micro-benchmark of src/engine/kernels on the wasm backend (1 thread): each training kernel
 * at batch 64 (median of 20 runs after 3 warm-ups), ours against the wasm built-in where one
 * exists; dW rows also show each of its two algorithms forced ('auto' picks per stride). Run: npx tsc -p tsconfig.json && node dist/bench/kernels-bench.js [--batch 64] [--runs 20] [--all]
 * --all adds lenet's and 'strong'-style shapes (3×3 same, stride 2) to net's.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import { conv2DBackpropFilterOptions } from '../src/engine/kernels/conv2d_backprop_filter.js';
import { registerFastWasmKernels, unregisterFastWasmKernels } from '../src/engine/kernels/index.js';

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}
const N = arg('--batch', 64);
const RUNS = arg('--runs', 20);
const WARMUP = 3;
const ALL = process.argv.includes('--all');

interface Case {
  label: string;
  kernel: string;
  inputs: () => Record<string, tf.Tensor>;
  attrs: NamedAttrMap;
  /** Conv2DBackpropFilter algorithm to force for this row. */
  method?: 'im2col' | 'conv';
}

function rnd(shape: number[], seed: number): tf.Tensor {
  return tf.randomNormal(shape, 0, 1, 'float32', seed);
}

function convCases(name: string, x: [number, number, number, number], w: [number, number, number, number], stride: number, pad: 'valid' | 'same'): Case[] {
  const xs = rnd(x, 1);
  const ws = rnd(w, 2);
  const y = tf.conv2d(xs as tf.Tensor4D, ws as tf.Tensor4D, stride, pad);
  const dy = rnd(y.shape, 3);
  y.dispose();
  const shape = `x[${x}] w[${w}] s${stride} ${pad}`;
  return [
    {
      label: `${name} dW  ${shape}`,
      kernel: tf.Conv2DBackpropFilter,
      inputs: () => ({ x: xs, dy }),
      attrs: { strides: stride, pad, dataFormat: 'NHWC', filterShape: w },
    },
    ...(['im2col', 'conv'] as const).map((method) => ({
      label: `${name} dW  ${shape} (${method})`,
      kernel: tf.Conv2DBackpropFilter,
      inputs: () => ({ x: xs, dy }),
      attrs: { strides: stride, pad, dataFormat: 'NHWC', filterShape: w },
      method,
    })),
    {
      label: `${name} dx  ${shape}`,
      kernel: tf.Conv2DBackpropInput,
      inputs: () => ({ dy, filter: ws }),
      attrs: { strides: stride, pad, dataFormat: 'NHWC', inputShape: x },
    },
  ];
}

function poolCase(name: string, x: [number, number, number, number]): Case {
  const xs = rnd(x, 4);
  const y = tf.maxPool(xs as tf.Tensor4D, 2, 2, 'valid');
  const dy = rnd(y.shape, 5);
  return {
    label: `${name} pool x[${x}] 2x2 s2`,
    kernel: tf.MaxPoolGrad,
    inputs: () => ({ dy, input: xs, output: y }),
    attrs: { filterSize: 2, strides: 2, pad: 'valid' },
  };
}

/** Median ms of one kernel call, or undefined when the kernel is missing/fails. */
function time(c: Case, runs: number): number | undefined {
  const engine = tf.engine();
  conv2DBackpropFilterOptions.method = c.method ?? 'auto';
  const once = (): number => {
    const t0 = performance.now();
    const out = engine.runKernel(c.kernel, c.inputs(), c.attrs) as tf.Tensor | TensorInfo;
    const dt = performance.now() - t0; // wasm kernels are synchronous
    (out as tf.Tensor).dispose();
    return dt;
  };
  try {
    for (let i = 0; i < WARMUP; i++) once();
  } catch {
    return undefined;
  }
  const ts: number[] = [];
  for (let i = 0; i < runs; i++) ts.push(once());
  ts.sort((a, b) => a - b);
  return ts[Math.floor(ts.length / 2)];
}

async function main(): Promise<void> {
  // Gradients are irrelevant here (kernels are called directly).
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  wasm.setThreadsCount(1);
  await tf.setBackend('wasm');
  await tf.ready();
  const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');

  const cases: Case[] = [
    ...convCases('net conv1', [N, 28, 28, 1], [5, 5, 1, 10], 1, 'valid'),
    poolCase('net pool1', [N, 24, 24, 10]),
    ...convCases('net conv2', [N, 12, 12, 10], [5, 5, 10, 20], 1, 'valid'),
    poolCase('net pool2', [N, 8, 8, 20]),
  ];
  if (ALL) {
    cases.push(
      ...convCases('lenet conv1', [N, 28, 28, 1], [5, 5, 1, 6], 1, 'same'),
      poolCase('lenet pool1', [N, 28, 28, 6]),
      ...convCases('lenet conv2', [N, 14, 14, 6], [5, 5, 6, 16], 1, 'valid'),
      ...convCases('strong c2', [N, 28, 28, 32], [3, 3, 32, 32], 1, 'same'),
      poolCase('strong pool1', [N, 28, 28, 32]),
      ...convCases('strong c4', [N, 14, 14, 64], [3, 3, 64, 64], 1, 'same'),
      ...convCases('strong s2', [N, 28, 28, 32], [3, 3, 32, 64], 2, 'same'),
    );
  }

  unregisterFastWasmKernels(); // no-op on first run; built-ins first
  const builtin = cases.map((c) => time(c, RUNS));
  registerFastWasmKernels();
  const ours = cases.map((c) => time(c, RUNS));
  conv2DBackpropFilterOptions.method = 'auto';

  const fmt = (v: number | undefined): string => (v === undefined ? 'missing' : v.toFixed(2));
  console.log(`wasm backend, simd=${simd}, 1 thread, batch ${N}, median of ${RUNS} runs (ms)`);
  const w = Math.max(...cases.map((c) => c.label.length));
  console.log(`${'kernel'.padEnd(w)}  ${'built-in'.padStart(9)}  ${'ours'.padStart(7)}  ${'speedup'.padStart(7)}`);
  cases.forEach((c, i) => {
    const b = builtin[i];
    const o = ours[i];
    const sp = b !== undefined && o !== undefined ? `${(b / o).toFixed(1)}x` : '-';
    console.log(`${c.label.padEnd(w)}  ${fmt(b).padStart(9)}  ${fmt(o).padStart(7)}  ${sp.padStart(7)}`);
  });
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
