import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type LinearCost, type Scenario, computeMsForEfficiency, fitLinearCost, predictEfficiency, predictStepMs, scalingLimit, wireBytesPerStep } from '../bench/scale/cost-model.js';
import type { ScaleRow } from '../bench/scale/run.js';
import { readJson, runCli, tempDir } from './helpers.js';

const SCALE = fileURLToPath(new URL('../bench/scale/run.js', import.meta.url));
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

interface ScaleJson {
  rows: ScaleRow[];
  cost_model: { cluster: { latencyMs: number; work: LinearCost }; loopback: { latencyMs: number; work: LinearCost } };
  predictions: Array<{ label: string; gbps: number; efficiency: Record<string, number> }>;
  plots: string[];
}

test('bench:scale: bad flags are refused in one line naming the flag, exit status 2', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['--max-workers', '0'], /^bench:scale: --max-workers 0: must be a positive integer$/],
    [['--compute-ms', 'soon'], /^bench:scale: --compute-ms soon: must be a positive number of milliseconds$/],
    [['--model', 'resnet'], /^bench:scale: --model resnet: unknown model \(net, lenet or strong\)$/],
    [['--max-workers', '1024'], /^bench:scale: --max-workers 1024 × --batch-per-worker 64 = 65536 samples per step: at most 30000/],
    [['--workers', '4'], /^bench:scale: Unknown option '--workers'/],
    [['--grad-dtype', 'float8'], /^bench:scale: --grad-dtype float8: expected float32, float16 or bfloat16$/],
  ];
  for (const [args, pattern] of cases) {
    const r = await runCli(SCALE, args);
    assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
    assert.match(r.stderr.trimEnd(), pattern);
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
  }
});

test('bench:scale: N = 1, 2, 4 simulated workers against the real coordinator give a sane table, a fit and the plots', async () => {
  const out = join(tempDir(), 'scale');
  const r = await runCli(SCALE, ['--max-workers', '4', '--steps', '10', '--size-model', 'lenet', '--size-max-workers', '2', '--out', out], { timeoutMs: 180_000 });
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  const result = readJson<ScaleJson>(join(out, 'scale.json'));

  const net = result.rows.filter((row) => row.model === 'net');
  assert.deepEqual(net.map((row) => row.workers), [1, 2, 4]);
  assert.deepEqual(result.rows.filter((row) => row.model === 'lenet').map((row) => row.workers), [1, 2]);
  for (const row of result.rows) {
    const what = `${row.model}, ${row.workers} workers`;
    assert.ok(row.efficiency > 0 && row.efficiency <= 1.2, `${what}: efficiency ${row.efficiency}`);
    assert.ok(row.steps_measured >= 10, `${what}: ${row.steps_measured} steps measured`);
    // A step waits for its shards' 12 ms timers: it cannot be shorter.
    assert.ok(row.step_ms.median >= row.compute_ms && row.step_ms.p90 >= row.step_ms.median, `${what}: step ${JSON.stringify(row.step_ms)}`);
    assert.ok(Number.isFinite(row.overhead_ms.median) && Number.isFinite(row.coordinator_step_overhead_ms.median), `${what}: overheads`);
    // All threads' CPU is at least the main and I/O threads', up to how /proc counts them: in clock ticks
    // (10 ms), the process's total and each thread's adjusted separately, read one after the other.
    // Two ticks apart over a 22-step run were seen; five are allowed.
    const tickSlack = 50 / row.steps_measured;
    assert.ok(
      row.coordinator_cpu_ms_per_step >= 0 && row.coordinator_process_cpu_ms_per_step + tickSlack >= row.coordinator_cpu_ms_per_step,
      `${what}: CPU ${row.coordinator_process_cpu_ms_per_step} (all threads) against ${row.coordinator_cpu_ms_per_step} (main and I/O threads)`,
    );
  }
  // The transport floor: the same bytes over the same sockets with no trainer, after each run.
  for (const row of result.rows) {
    const floor = row.transport_floor;
    const what = `${row.model}, ${row.workers} workers`;
    assert.ok(floor, `${what}: a transport floor`);
    // Its DEALERs answer after the same timers: no step of it is shorter than a shard's compute (a
    // timer may fire up to a millisecond early on Node's clock: 1 ms of slack).
    assert.ok(floor.step_ms.median >= row.compute_ms - 1 && floor.step_ms.p90 >= floor.step_ms.median, `${what}: floor step ${JSON.stringify(floor.step_ms)}`);
    assert.ok(floor.steps_measured >= row.steps_measured, `${what}: floor over ${floor.steps_measured} steps`);
    assert.ok(floor.efficiency > 0 && floor.efficiency <= 1.2, `${what}: floor efficiency ${floor.efficiency}`);
  }
  assert.equal(net[0].transport_floor?.efficiency, 1);

  // Every worker is sent the weights and its shard, and sends a gradient back, every step.
  for (let i = 1; i < net.length; i++) {
    assert.ok(net[i].bytes_sent_per_step > net[i - 1].bytes_sent_per_step * 1.5, `bytes sent grow with N: ${net.map((x) => x.bytes_sent_per_step)}`);
    assert.ok(net[i].bytes_received_per_step > net[i - 1].bytes_received_per_step * 1.5, `bytes received grow with N: ${net.map((x) => x.bytes_received_per_step)}`);
  }
  assert.ok(net[0].bytes_received_per_step >= 21840 * 4, 'one net gradient per step at least');
  assert.equal(net[0].efficiency, 1);

  for (const fit of [result.cost_model.cluster.work, result.cost_model.loopback.work]) {
    assert.ok(fit.fixedMs >= 0 && fit.perWorkerMs >= 0 && (fit.perWorkerMegaParamMs ?? -1) >= 0, `no negative cost: ${JSON.stringify(fit)}`);
  }
  assert.ok(result.predictions.some((p) => p.label === '10 M parameters'), 'two model sizes measured: the 10 M prediction is made');
  for (const p of result.predictions) {
    for (const e of Object.values(p.efficiency)) assert.ok(e > 0 && e <= 1 + 1e-9, `${p.label} at ${p.gbps} Gb/s: ${e}`);
  }

  assert.deepEqual(result.plots, ['scale-efficiency.png', 'scale-step-time.png']);
  for (const plot of result.plots) {
    const png = readFileSync(join(out, plot));
    assert.ok(png.length > 5000 && png.subarray(0, 8).equals(PNG_SIGNATURE), `${plot} is a PNG`);
  }
  const md = readFileSync(join(out, 'scale.md'), 'utf8');
  assert.match(md, /\| model\s+\| workers \| step ms \(median \/ p90\)/);
  assert.match(md, /efficiency at 16 workers ≥ 90% \(T = 12 ms\) \| – \| – \| n\/a \(not measured\)/);
  assert.match(md, /\| model \| workers \| step ms, run \(median\) \| step ms, ZeroMQ alone \(median \/ p90\)/);
  assert.ok(r.stdout.includes(md.split('\n')[2]), 'the table is printed as written');
});

test('bench:scale --skip-floor: the runs alone, no transport floor in the table or the figures', async () => {
  const out = join(tempDir(), 'scale');
  const r = await runCli(SCALE, ['--max-workers', '1', '--steps', '3', '--size-model', 'none', '--skip-floor', '--out', out], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  const result = readJson<ScaleJson>(join(out, 'scale.json'));
  assert.equal(result.rows.length, 1);
  assert.equal(result.rows[0].transport_floor, undefined);
  assert.doesNotMatch(readFileSync(join(out, 'scale.md'), 'utf8'), /ZeroMQ alone \(median/);
});

test('cost model: the fit recovers the constants of exact data, and efficiency falls with N and with a slower link', () => {
  const truth = { a: 0.8, b: 0.05, c: 3 };
  const observations = [1, 2, 4, 8, 16].flatMap((workers) =>
    [21840, 317066].map((params) => ({ workers, params, ms: truth.a + truth.b * workers + (truth.c * workers * params) / 1e6 })),
  );
  const fit = fitLinearCost(observations);
  assert.ok(Math.abs(fit.fixedMs - truth.a) < 1e-6 && Math.abs(fit.perWorkerMs - truth.b) < 1e-6, JSON.stringify(fit));
  assert.ok(Math.abs((fit.perWorkerMegaParamMs ?? 0) - truth.c) < 1e-6, JSON.stringify(fit));
  assert.ok(fit.r2 > 0.999999);

  // Noise that would pull a cost below zero leaves it at zero instead.
  const noisy = fitLinearCost([
    { workers: 1, params: 21840, ms: 3 },
    { workers: 2, params: 21840, ms: 2 },
    { workers: 4, params: 21840, ms: 2.5 },
  ]);
  assert.ok(noisy.perWorkerMs >= 0 && noisy.fixedMs >= 0, JSON.stringify(noisy));
  assert.equal(noisy.perWorkerMegaParamMs, undefined, 'one model size: no per-parameter term');

  const model = { latencyMs: 0.5, work: fit };
  const s: Scenario = { params: 21840, batchPerWorker: 64, computeMs: 12, gbps: 10 };
  assert.equal(predictEfficiency(model, s, 1), 1);
  assert.ok(predictEfficiency(model, s, 64) < predictEfficiency(model, s, 16));
  assert.ok(predictEfficiency(model, { ...s, gbps: 100 }, 64) > predictEfficiency(model, s, 64));
  // 64 workers at 10 Gb/s: 64 assignments of 88 KB (the weights and 64 sample indices) take 4.5 ms
  // on the wire; sent pixels, 137 KB each, 7 ms.
  const wireMs = predictStepMs(model, s, 64) - predictStepMs(model, { ...s, gbps: Infinity }, 64);
  assert.ok(wireMs > 4.2 && wireMs < 4.8, `wire ${wireMs} ms`);
  const pixelsMs = (wireBytesPerStep(64, 21840, 64, 'pixels') * 8) / 10e9 * 1000;
  assert.ok(pixelsMs > 6.5 && pixelsMs < 7.5, `wire with pixels ${pixelsMs} ms`);
  const limit = scalingLimit(model, s, 0.75);
  assert.ok(limit !== undefined && predictEfficiency(model, s, limit) < 0.75 && predictEfficiency(model, s, limit / 2) >= 0.75);
  // The compute time that brings 64 workers to 90%, put back in, gives 90%.
  const computeMs = computeMsForEfficiency(model, s, 64, 0.9);
  assert.ok(computeMs > s.computeMs, `${computeMs} ms`);
  assert.ok(Math.abs(predictEfficiency(model, { ...s, computeMs }, 64) - 0.9) < 1e-9);
});
