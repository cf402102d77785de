/**
 * The webgpu engine end to end, through the real CLI: it learns, deterministic mode gives the
 * same bits with one worker and with two, summary.json names the adapters, `auto` never picks a
 * software adapter, and an engine that cannot start says why in one line.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { join } from 'node:path';
import { COORDINATOR, readJson, runCli, startWebGpuOrSkip, tempDir } from './helpers.js';

interface Device {
  id?: string;
  backend: string;
  device: string;
  adapter?: { vendor: string; architecture: string; device: string; description: string; software: boolean };
}
interface Summary {
  backend: string;
  test_accuracy: number;
  weights_sha256: string;
  workers: number;
  devices: { coordinator: Device; workers: Device[] };
}

const env = { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? tempDir('xdg-') };

async function train(args: string[]): Promise<Summary> {
  const out = join(tempDir(), 'run');
  const r = await runCli(COORDINATOR, [...args, '--out', out], { env, timeoutMs: 300_000 });
  assert.equal(r.code, 0, `coordinator ${args.join(' ')} failed:\n${r.stdout}\n${r.stderr}`);
  return readJson<Summary>(join(out, 'summary.json'));
}

test('webgpu trains net: well above chance, and as accurate as the wasm engine on the same run', async (t) => {
  if (!(await startWebGpuOrSkip(t))) return;
  // 20 steps of 64 at a raised learning rate: enough to learn, short enough for software Vulkan.
  const run = ['--workers', '0', '--epochs', '1', '--train-limit', '1280', '--test-limit', '500', '--lr', '0.1'];
  const gpu = await train(['--engine', 'webgpu', ...run]);
  const cpu = await train(['--engine', 'wasm', ...run]);
  assert.equal(gpu.backend, 'webgpu');
  assert.equal(cpu.backend, 'wasm');
  assert.ok(gpu.test_accuracy >= 0.5, `accuracy ${gpu.test_accuracy} after 20 steps`);
  assert.ok(Math.abs(gpu.test_accuracy - cpu.test_accuracy) <= 0.03, `webgpu ${gpu.test_accuracy} vs wasm ${cpu.test_accuracy}`);
  assert.equal(gpu.devices.coordinator.backend, 'webgpu');
  assert.ok(gpu.devices.coordinator.adapter, 'the coordinator names its adapter');
});

test('webgpu --deterministic: --workers 2 gives the weights of --workers 1, bit for bit', async (t) => {
  if (!(await startWebGpuOrSkip(t))) return;
  const run = ['--engine', 'webgpu', '--deterministic', '--epochs', '1', '--train-limit', '640', '--test-limit', '200'];
  const one = await train([...run, '--workers', '1']);
  const two = await train([...run, '--workers', '2']);
  assert.equal(two.backend, 'webgpu');
  assert.equal(two.weights_sha256, one.weights_sha256);
  assert.equal(two.devices.workers.length, 2);
  for (const w of [...two.devices.workers, two.devices.coordinator]) {
    assert.equal(w.backend, 'webgpu');
    assert.ok(w.adapter && typeof w.adapter.vendor === 'string' && typeof w.adapter.description === 'string', JSON.stringify(w));
    // The device line labels a software adapter as such.
    if (w.adapter.software) assert.match(w.device, /software/);
  }
});

test('--engine auto never chooses a software adapter', async (t) => {
  if (!(await startWebGpuOrSkip(t))) return;
  const { currentEngine } = await import('../src/engine/backend.js');
  const adapter = currentEngine()?.adapter;
  if (!adapter?.software) {
    t.skip(`this machine has a hardware adapter (${adapter?.description}): auto rightly chooses it`);
    return;
  }
  const summary = await train(['--engine', 'auto', '--workers', '0', '--epochs', '1', '--train-limit', '64', '--test-limit', '100']);
  assert.notEqual(summary.backend, 'webgpu');
  assert.equal(summary.devices.coordinator.adapter, undefined);
  // Even asked directly, as auto would ask on a machine with GPU hardware, the engine refuses it.
  const start = new URL('../src/engine/webgpu/start.js', import.meta.url).href;
  const probe = spawnSync(process.execPath, ['--input-type=module', '-e', `import(${JSON.stringify(start)}).then((m) => m.startWebGpu(false)).then(() => process.exit(0), (e) => { console.log(e.message); process.exit(3); })`], {
    env,
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(probe.status, 3, probe.stdout + probe.stderr);
  assert.match(probe.stdout, /only a software adapter was found \(.*software.*\); force it with --engine webgpu/);
});

test('a forced engine that cannot start is one line naming why, exit 1', async () => {
  const cases: Array<{ args: string[]; env?: Record<string, string>; why: RegExp }> = [
    { args: ['--engine', 'webgpu'], env: { VK_DRIVER_FILES: '/nonexistent/icd.json' }, why: /--engine webgpu: no Vulkan driver/ },
    { args: ['--engine', 'tfjs-node'], why: /--engine tfjs-node: the package @tensorflow\/tfjs-node is not installed/ },
    { args: ['--engine', 'webgpu', '--no-cuda'], why: /--engine webgpu computes on a GPU, which --no-cuda forbids/ },
  ];
  for (const c of cases) {
    const r = await runCli(COORDINATOR, [...c.args, '--workers', '0', '--epochs', '1', '--train-limit', '64', '--out', join(tempDir(), 'run')], {
      env: { ...env, ...c.env },
      timeoutMs: 60_000,
    });
    assert.equal(r.code, 1, `${c.args.join(' ')}: ${r.stderr}`);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `one line, got:\n${r.stderr}`);
    assert.match(lines[0], c.why);
  }
  const bad = await runCli(COORDINATOR, ['--engine', 'cuda', '--workers', '0'], { env, timeoutMs: 60_000 });
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--engine.*Allowed choices are auto, webgpu, wasm, tfjs-node, tfjs-node-gpu/);
});
