/**
 * `npm run bench:scale`: the real coordinator with N simulated workers, N = 1, 2, 4, … up to
 * --max-workers (256), one run after the other. Each run is a real `coordinator --no-spawn` process;
 * the workers are simulated in this process (bench/scale/simulator.ts: the real protocol over real
 * ZeroMQ sockets, compute replaced by a --compute-ms timer, so they burn no CPU while computing).
 * Weak scaling: every worker gets one shard of --batch-per-worker samples, so the global batch is
 * B × N.
 *
 * Per N: step time (median, p90), the step's overhead, the coordinator's CPU per step, bytes per
 * step and weak-scaling efficiency (throughput(N) / (N × throughput(1))). Then the cost model
 * (bench/scale/cost-model.ts), fitted to the coordinator's CPU per step and, to describe this machine,
 * to the step overheads, and its predictions for a cluster at 10, 25 and 100 Gb/s.
 * Writes DIR/scale.md (the tables), DIR/scale.json (every number, the commands, the machine) and two
 * plots, DIR/scale-efficiency.png and DIR/scale-step-time.png.
 *
 * Exit status: 0 when every run finished (targets are reported, not enforced), 1 when a run failed,
 * 2 on bad flags.
 */
import { spawn, execFileSync } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createModel, isModelName, paramLayout } from '../../src/models/index.js';
import { type GradDtype, bytesPerElement, isGradDtype } from '../../src/protocol/grad-dtype.js';
import { renderLineChart } from '../../src/report/chart.js';
import { PALETTE } from '../../src/report/draw.js';
import type { LineSeries } from '../../src/report/types.js';
import { quantile } from '../../src/util/quantile.js';
import { type LinearCost, type Scenario, type StepModel, computeMsForEfficiency, fitLinearCost, predictEfficiency, scalingLimit, wireBytesPerStep } from './cost-model.js';
import { freeLoopbackPort } from '../free-port.js';
import { SimulatedWorkers } from './simulator.js';
import { type FloorResult, measureTransportFloor } from './transport-floor.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const COORDINATOR = join(ROOT, 'dist', 'src', 'cli', 'coordinator.js');
const MNIST_TRAIN_SIZE = 60000;
/** Steps at the start of each run left out of the figures (connections warming up, first allocations). */
const WARMUP_STEPS = 2;
/** How many more steps the one-worker run measures than --steps. */
const BASELINE_STEPS_FACTOR = 3;
/** Test samples evaluated at each epoch's end (the steps around an evaluation are left out anyway). */
const TEST_LIMIT = 100;
const LINKS_GBPS = [10, 25, 100];
/** The larger model the predictions speak of. */
const LARGE_PARAMS = 10_000_000;
/** The targets of weak-scaling efficiency, with T = 12 ms and the default model. */
const TARGETS = [
  { workers: 16, efficiency: 0.9 },
  { workers: 64, efficiency: 0.75 },
];
const TARGET_COMPUTE_MS = 12;

const USAGE = `usage: node dist/bench/scale/run.js [options]   (or: npm run bench:scale -- [options])
  --max-workers N        runs with 1, 2, 4, … up to N simulated workers (default 256)
  --compute-ms T         the simulated compute time of one shard, ms (default 12)
  --steps S              measured steps per run (default 30; 3 × S with one worker, the baseline;
                         warm-up and epoch ends come on top)
  --batch-per-worker B   samples per worker per step (default 64; the global batch is B × N)
  --model NAME           the model whose gradients travel: net, lenet or strong (default net)
  --size-model NAME      a second, larger model, measured up to --size-max-workers, so that the cost
                         model can tell per-worker from per-parameter costs (default strong; none: skip)
  --size-max-workers N   the largest worker count for --size-model (default 64)
  --grad-dtype D         what weights and gradients travel as: float32, float16 or bfloat16 (default
                         float32; the coordinator's --grad-dtype)
  --pixels               the simulated workers do not hold the training set: every assignment carries
                         its shard's pixels and labels (default: they hold it, as a worker with the
                         bundled MNIST does, and are sent sample indices)
  --skip-floor           do not measure the transport floor (the same bytes over the same sockets,
                         no trainer) after each run
  --out DIR              where the runs, scale.md, scale.json and the plots go
                         (default runs/bench-scale-<timestamp>)
  -h, --help             this text`;

class UsageError extends Error {}

interface Options {
  maxWorkers: number;
  computeMs: number;
  steps: number;
  batchPerWorker: number;
  model: string;
  sizeModel: string | undefined;
  sizeMaxWorkers: number;
  /** --pixels: the simulated workers are sent pixels, not sample indices. */
  pixels: boolean;
  /** --grad-dtype, passed to the coordinator. */
  gradDtype: GradDtype;
  /** Measure the transport floor after each run (bench/scale/transport-floor.ts); --skip-floor: no. */
  floor: boolean;
  out: string;
}

function positiveInt(name: string, value: string): number {
  const n = Number(value);
  if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(n) || n <= 0) throw new UsageError(`${name} ${value}: must be a positive integer`);
  return n;
}

function positiveNumber(name: string, value: string): number {
  const n = Number(value);
  if (!/^\s*[\d.]+\s*$/.test(value) || !Number.isFinite(n) || n <= 0) throw new UsageError(`${name} ${value}: must be a positive number of milliseconds`);
  return n;
}

function gradDtypeOption(value: string | undefined): GradDtype {
  if (value === undefined) return 'float32';
  if (!isGradDtype(value)) throw new UsageError(`--grad-dtype ${value}: expected float32, float16 or bfloat16`);
  return value;
}

function modelName(name: string, value: string): string {
  if (!isModelName(value)) throw new UsageError(`${name} ${value}: unknown model (net, lenet or strong)`);
  return value;
}

function stamp(d: Date): string {
  return d.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
}

export function parseOptions(argv: string[]): Options {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        'max-workers': { type: 'string' },
        'compute-ms': { type: 'string' },
        steps: { type: 'string' },
        'batch-per-worker': { type: 'string' },
        model: { type: 'string' },
        'size-model': { type: 'string' },
        'size-max-workers': { type: 'string' },
        pixels: { type: 'boolean' },
        'grad-dtype': { type: 'string' },
        'skip-floor': { type: 'boolean' },
        out: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (e) {
    throw new UsageError((e as Error).message.split('\n')[0]);
  }
  const v = parsed.values;
  if (v.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const opts: Options = {
    maxWorkers: v['max-workers'] ? positiveInt('--max-workers', v['max-workers']) : 256,
    computeMs: v['compute-ms'] ? positiveNumber('--compute-ms', v['compute-ms']) : TARGET_COMPUTE_MS,
    steps: v.steps ? positiveInt('--steps', v.steps) : 30,
    batchPerWorker: v['batch-per-worker'] ? positiveInt('--batch-per-worker', v['batch-per-worker']) : 64,
    model: v.model ? modelName('--model', v.model) : 'net',
    sizeModel: v['size-model'] === 'none' ? undefined : v['size-model'] ? modelName('--size-model', v['size-model']) : 'strong',
    sizeMaxWorkers: v['size-max-workers'] ? positiveInt('--size-max-workers', v['size-max-workers']) : 64,
    pixels: v.pixels === true,
    gradDtype: gradDtypeOption(v['grad-dtype']),
    floor: v['skip-floor'] !== true,
    out: resolve(v.out ?? join('runs', `bench-scale-${stamp(new Date())}`)),
  };
  // An epoch must hold at least two steps, so that steps away from its end (and its evaluation) exist.
  const largest = opts.maxWorkers * opts.batchPerWorker;
  if (2 * largest > MNIST_TRAIN_SIZE) {
    throw new UsageError(
      `--max-workers ${opts.maxWorkers} × --batch-per-worker ${opts.batchPerWorker} = ${largest} samples per step: at most ${MNIST_TRAIN_SIZE / 2} (half the MNIST training set) can be measured`,
    );
  }
  if (opts.sizeModel === opts.model) throw new UsageError(`--size-model ${opts.sizeModel} is --model already: choose another size, or none`);
  return opts;
}

/** The worker counts of a sweep: 1, 2, 4, … up to `max` (and `max` itself when it is no power of two). */
function workerCounts(max: number): number[] {
  const counts: number[] = [];
  for (let n = 1; n <= max; n *= 2) counts.push(n);
  if (counts[counts.length - 1] !== max) counts.push(max);
  return counts;
}


const CLOCK_TICKS_PER_S = ((): number => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** CPU time (user + system) in a /proc stat file (a process's, or one thread's), ms; NaN once it is gone. */
function statCpuMs(path: string): number {
  try {
    const stat = readFileSync(path, 'utf8');
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_S) * 1000;
  } catch {
    return Number.NaN;
  }
}

/** One name of the coordinator's threads, as /proc gives it (`comm`). */
function threadName(pid: number, tid: string): string {
  try {
    return readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

/**
 * The coordinator's CPU time: all its threads, and the threads that do a step's work: the main
 * thread (the training loop, encoding, the reduce) and ZeroMQ's I/O threads. The others are V8's
 * compilers and collectors and libuv's pool: in the first seconds of a process, V8 still compiles
 * the engine's WebAssembly in the background, which says nothing about steps.
 */
class CoordinatorCpu {
  private stepThreads: string[] | undefined;

  constructor(private readonly pid: number) {}

  sample(): { all: number; step: number } {
    // ZeroMQ's threads exist once its context does, before the first step: list them once.
    this.stepThreads ??= readdirSync(`/proc/${this.pid}/task`).filter((tid) => tid === String(this.pid) || threadName(this.pid, tid).startsWith('ZMQbg/IO'));
    const step = this.stepThreads.reduce((sum, tid) => sum + statCpuMs(`/proc/${this.pid}/task/${tid}/stat`), 0);
    return { all: statCpuMs(`/proc/${this.pid}/stat`), step };
  }
}

function ownCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

export interface ScaleRow {
  model: string;
  params: number;
  workers: number;
  batch_per_worker: number;
  compute_ms: number;
  /** Steps the figures below are taken over. */
  steps_measured: number;
  /** Start of one step to the start of the next, as the simulated workers see it, ms. */
  step_ms: { median: number; p90: number };
  /** Step time minus the slowest worker's compute, measured here, ms. */
  overhead_ms: { median: number; p90: number };
  /** summary.json's distributed.step_overhead_ms: the same, as the coordinator measures it. */
  coordinator_step_overhead_ms: { median: number; p90: number };
  /** The coordinator's CPU time per step in its main thread and ZeroMQ's I/O thread, ms. */
  coordinator_cpu_ms_per_step: number;
  /** The same, all of the coordinator's threads (V8's background compilers and collectors too), ms. */
  coordinator_process_cpu_ms_per_step: number;
  /** This process's CPU time per step: the simulated workers' share of the machine, ms. */
  simulator_cpu_ms_per_step: number;
  /** summary.json's distributed bytes per step (heartbeats included). */
  bytes_sent_per_step: number;
  bytes_received_per_step: number;
  samples_per_s: number;
  /** throughput(N) / (N × throughput(1)) of the same model: step(1) / step(N). */
  efficiency: number;
  /**
   * The transport floor (bench/scale/transport-floor.ts): the run's bytes per worker over the same
   * sockets with no trainer, the same timers; its efficiency against its own one-worker step. Absent
   * with --skip-floor.
   */
  transport_floor?: FloorResult & { efficiency: number };
  command: string;
}

/** A run's row as measured, before it is set against the one-worker run and its floor. */
type MeasuredRow = Omit<ScaleRow, 'efficiency' | 'transport_floor'>;

interface RunPlan {
  model: string;
  workers: number;
  batch: number;
  stepsPerEpoch: number;
  trainLimit: number;
  epochs: number;
}

/**
 * Epochs of whole steps only, enough of them for the measured steps away from each epoch's end.
 * The one-worker run is every efficiency's denominator, and its steps are the cheapest: it measures
 * BASELINE_STEPS_FACTOR times as many.
 */
function planRun(opts: Options, model: string, workers: number): RunPlan {
  const batch = opts.batchPerWorker * workers;
  const steps = workers === 1 ? BASELINE_STEPS_FACTOR * opts.steps : opts.steps;
  const stepsPerEpoch = Math.min(Math.floor(MNIST_TRAIN_SIZE / batch), WARMUP_STEPS + steps + 1);
  // Each epoch's last step is followed by its evaluation and checkpoint: left out.
  const usablePerEpoch = stepsPerEpoch - 1;
  const epochs = Math.ceil((WARMUP_STEPS + steps + 1) / usablePerEpoch);
  return { model, workers, batch, stepsPerEpoch, trainLimit: stepsPerEpoch * batch, epochs };
}

/** A run's row, and how many parts each result travelled in (what the transport floor repeats). */
async function runOne(opts: Options, plan: RunPlan, params: number): Promise<{ row: MeasuredRow; resultParts: number }> {
  const port = await freeLoopbackPort();
  const endpoint = `tcp://127.0.0.1:${port}`;
  const name = `${plan.model}-w${plan.workers}`;
  const runDir = join(opts.out, 'runs', name);
  const args = [
    '--no-spawn', '--listen', endpoint, '--workers', String(plan.workers),
    '--model', plan.model, '--batch-size', String(plan.batch),
    '--train-limit', String(plan.trainLimit), '--test-limit', String(TEST_LIMIT), '--epochs', String(plan.epochs),
    '--engine', 'wasm', '--no-cuda', '--log-interval', '1000', '--connect-timeout', '120', '--out', runDir,
    ...(opts.gradDtype !== 'float32' ? ['--grad-dtype', opts.gradDtype] : []),
  ];
  const command = `coordinator ${args.join(' ')}`;
  const log = createWriteStream(join(opts.out, `${name}.log`));
  const child = spawn(process.execPath, [COORDINATOR, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderrTail = '';
  child.stdout.pipe(log, { end: false });
  child.stderr.on('data', (d: Buffer) => {
    log.write(d);
    stderrTail = (stderrTail + d.toString()).slice(-2000);
  });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const pid = child.pid!;

  const cpuOf = new CoordinatorCpu(pid);
  const coordinatorCpu = new Map<number, { all: number; step: number }>();
  const simulatorCpu = new Map<number, number>();
  const sim = SimulatedWorkers.start({
    endpoint,
    workers: plan.workers,
    computeMs: opts.computeMs,
    holdTrainSet: !opts.pixels,
    onStepStart: (step) => {
      coordinatorCpu.set(step, cpuOf.sample());
      simulatorCpu.set(step, ownCpuMs());
    },
  });
  const code = await Promise.race([exited, sim.done.then(() => exited)]).catch(async (e: Error) => {
    child.kill('SIGTERM');
    await exited;
    throw new Error(`${name}: ${e.message} (log: ${join(opts.out, `${name}.log`)})`);
  });
  sim.close();
  await new Promise<void>((r) => log.end(r));
  if (code !== 0) {
    const why = stderrTail.trim().split('\n').pop() ?? '';
    throw new Error(`${name}: the coordinator exited with status ${code}${why ? `: ${why}` : ''} (log: ${join(opts.out, `${name}.log`)})`);
  }
  const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8')) as {
    worker_failures: number;
    distributed: { bytes_sent_per_step: number; bytes_received_per_step: number; step_overhead_ms: { median: number; p90: number } };
  };

  // A lost worker's shards went to the others: its steps measured something else.
  if (summary.worker_failures > 0) throw new Error(`${name}: the coordinator lost ${summary.worker_failures} simulated worker(s) (log: ${join(opts.out, `${name}.log`)})`);
  const records = sim.stepRecords();
  const totalSteps = plan.stepsPerEpoch * plan.epochs;
  const walls: number[] = [];
  const overheads: number[] = [];
  let coordinatorCpuMs = 0;
  let coordinatorProcessCpuMs = 0;
  let simulatorCpuMs = 0;
  for (let step = WARMUP_STEPS; step < totalSteps - 1; step++) {
    if (step % plan.stepsPerEpoch === plan.stepsPerEpoch - 1) continue; // its evaluation follows
    const r = records.get(step);
    const next = records.get(step + 1);
    if (!r || !next) continue;
    const wall = next.firstAssignAt - r.firstAssignAt;
    walls.push(wall);
    overheads.push(wall - r.maxComputeMs);
    coordinatorCpuMs += coordinatorCpu.get(step + 1)!.step - coordinatorCpu.get(step)!.step;
    coordinatorProcessCpuMs += coordinatorCpu.get(step + 1)!.all - coordinatorCpu.get(step)!.all;
    simulatorCpuMs += simulatorCpu.get(step + 1)! - simulatorCpu.get(step)!;
  }
  const medianStep = quantile(walls, 0.5);
  const row = {
    model: plan.model,
    params,
    workers: plan.workers,
    batch_per_worker: opts.batchPerWorker,
    compute_ms: opts.computeMs,
    steps_measured: walls.length,
    step_ms: { median: medianStep, p90: quantile(walls, 0.9) },
    overhead_ms: { median: quantile(overheads, 0.5), p90: quantile(overheads, 0.9) },
    coordinator_step_overhead_ms: { median: summary.distributed.step_overhead_ms.median, p90: summary.distributed.step_overhead_ms.p90 },
    coordinator_cpu_ms_per_step: coordinatorCpuMs / walls.length,
    coordinator_process_cpu_ms_per_step: coordinatorProcessCpuMs / walls.length,
    simulator_cpu_ms_per_step: simulatorCpuMs / walls.length,
    bytes_sent_per_step: summary.distributed.bytes_sent_per_step,
    bytes_received_per_step: summary.distributed.bytes_received_per_step,
    samples_per_s: (plan.batch / medianStep) * 1000,
    command,
  };
  return { row, resultParts: sim.streamsGradients ? 2 : 1 };
}

/**
 * The transport floor of a measured run: one assignment and one result per worker and step of the
 * run's sizes (summary.json's bytes per step, heartbeats included, over the workers; the weights
 * frame as it travels), in as many parts as the run's results.
 */
async function floorOf(opts: Options, row: MeasuredRow, resultParts: number): Promise<FloorResult> {
  const weightsBytes = row.params * bytesPerElement(opts.gradDtype);
  const assignBytes = Math.round(row.bytes_sent_per_step / row.workers);
  const resultBytes = Math.round(row.bytes_received_per_step / row.workers);
  const tail = resultParts === 2 ? Math.floor(resultBytes / 2) : 0;
  return measureTransportFloor({
    workers: row.workers,
    computeMs: row.compute_ms,
    headerBytes: Math.max(1, assignBytes - weightsBytes),
    weightsBytes,
    resultPartBytes: tail > 0 ? [tail, resultBytes - tail] : [resultBytes],
    steps: row.steps_measured,
  });
}

// ---------------------------------------------------------------- output

const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : '–');
const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : '–');
const pct = (x: number): string => (Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : '–');
const kb = (x: number): string => (Number.isFinite(x) ? (x / 1024).toFixed(1) : '–');

function markdownTable(header: string[], rows: string[][], rightAligned = header.map((_, i) => i > 0)): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]): string => `| ${cells.map((c, i) => (rightAligned[i] ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (rightAligned[i] ? `${'-'.repeat(w + 1)}:` : '-'.repeat(w + 2))).join('|')}|`;
  return [line(header), rule, ...rows.map(line)].join('\n');
}

function measuredTable(rows: readonly ScaleRow[]): string {
  return markdownTable(
    ['model', 'workers', 'step ms (median / p90)', 'overhead ms (median / p90)', 'coordinator overhead ms (median / p90)', 'coordinator CPU ms/step', 'simulator CPU ms/step', 'KB sent/step', 'KB received/step', 'samples/s', 'efficiency'],
    rows.map((r) => [
      r.model,
      String(r.workers),
      `${f1(r.step_ms.median)} / ${f1(r.step_ms.p90)}`,
      `${f2(r.overhead_ms.median)} / ${f2(r.overhead_ms.p90)}`,
      `${f2(r.coordinator_step_overhead_ms.median)} / ${f2(r.coordinator_step_overhead_ms.p90)}`,
      f2(r.coordinator_cpu_ms_per_step),
      f2(r.simulator_cpu_ms_per_step),
      kb(r.bytes_sent_per_step),
      kb(r.bytes_received_per_step),
      r.samples_per_s.toFixed(0),
      pct(r.efficiency),
    ]),
    [false, true, true, true, true, true, true, true, true, true, true],
  );
}

/** The runs beside their transport floors: what the trainer adds to the sockets' own cost. */
function floorTable(rows: readonly ScaleRow[]): string {
  const floored = rows.filter((r) => r.transport_floor);
  if (floored.length === 0) return '';
  return markdownTable(
    ['model', 'workers', 'step ms, run (median)', 'step ms, ZeroMQ alone (median / p90)', 'the trainer\'s share ms (run − ZeroMQ alone)', 'efficiency, run', 'efficiency, ZeroMQ alone'],
    floored.map((r) => [
      r.model,
      String(r.workers),
      f1(r.step_ms.median),
      `${f1(r.transport_floor!.step_ms.median)} / ${f1(r.transport_floor!.step_ms.p90)}`,
      f2(r.step_ms.median - r.transport_floor!.step_ms.median),
      pct(r.efficiency),
      pct(r.transport_floor!.efficiency),
    ]),
    [false, true, true, true, true, true, true],
  );
}

interface Prediction {
  label: string;
  params: number;
  gbps: number;
  workersPerNode: number;
  efficiency: Record<string, number>;
  /** The fewest workers (power of two) below 90% and below 75% efficiency. */
  below90: number | undefined;
  below75: number | undefined;
  /** The compute time per shard at which 64 workers would reach 90%, ms. */
  compute_ms_for_90_at_64: number;
}

const PREDICTED_WORKERS = [1, 16, 64, 256, 1024, 4096];

function predictions(model: StepModel, opts: Options, params: number): Prediction[] {
  const out: Prediction[] = [];
  const sizes = [
    { label: `${opts.model} (${params.toLocaleString('en-US')} parameters)`, params },
    ...(model.work.perWorkerMegaParamMs === undefined ? [] : [{ label: '10 M parameters', params: LARGE_PARAMS }]),
  ];
  for (const size of sizes) {
    for (const [gbps, workersPerNode] of [...LINKS_GBPS.map((g) => [g, 1]), [LINKS_GBPS[0], 8]] as Array<[number, number]>) {
      const s: Scenario = { params: size.params, batchPerWorker: opts.batchPerWorker, computeMs: opts.computeMs, gbps, workersPerNode };
      out.push({
        label: size.label,
        params: size.params,
        gbps,
        workersPerNode,
        efficiency: Object.fromEntries(PREDICTED_WORKERS.map((n) => [String(n), predictEfficiency(model, s, n)])),
        below90: scalingLimit(model, s, 0.9),
        below75: scalingLimit(model, s, 0.75),
        compute_ms_for_90_at_64: computeMsForEfficiency(model, s, 64, 0.9),
      });
    }
  }
  return out;
}

function predictionTable(preds: readonly Prediction[]): string {
  return markdownTable(
    ['model', 'link', ...PREDICTED_WORKERS.map((n) => `N=${n}`), 'below 90% from', 'below 75% from', 'T for 90% at N=64'],
    preds.map((p) => [
      p.label,
      `${p.gbps} Gb/s${p.workersPerNode > 1 ? `, ${p.workersPerNode} workers per node added up first` : ''}`,
      ...PREDICTED_WORKERS.map((n) => pct(p.efficiency[String(n)])),
      p.below90 === undefined ? '–' : `N=${p.below90}`,
      p.below75 === undefined ? '–' : `N=${p.below75}`,
      p.compute_ms_for_90_at_64 >= 1000 ? `${(p.compute_ms_for_90_at_64 / 1000).toFixed(1)} s` : `${p.compute_ms_for_90_at_64.toFixed(0)} ms`,
    ]),
    [false, false, ...PREDICTED_WORKERS.map(() => true), true, true, true],
  );
}

function describeFit(title: string, m: LinearCost): string[] {
  const c = m.perWorkerMegaParamMs === undefined ? 'not fitted (one model size measured; --size-model adds a second)' : `${m.perWorkerMegaParamMs.toFixed(3)} ms per worker per million parameters`;
  return [
    `${title}:`,
    `  a = ${m.fixedMs.toFixed(3)} ms per step`,
    `  b = ${(m.perWorkerMs * 1000).toFixed(1)} µs per worker per step`,
    `  c = ${c}`,
    `  R² ${m.r2.toFixed(3)}, worst residual ${m.worstResidualMs.toFixed(2)} ms`,
  ];
}

function writePlots(out: string, rows: readonly ScaleRow[], loopback: StepModel, cluster: StepModel, opts: Options, params: number): string[] {
  const main = rows.filter((r) => r.model === opts.model);
  const maxN = Math.max(...main.map((r) => r.workers), 1);
  const curve = (model: StepModel, s: Scenario, upTo: number): Array<[number, number]> => {
    const pts: Array<[number, number]> = [];
    for (let n = 1; n <= upTo; n *= 2) pts.push([n, 100 * predictEfficiency(model, s, n)]);
    return pts;
  };
  const base: Scenario = { params, batchPerWorker: opts.batchPerWorker, computeMs: opts.computeMs, gbps: Infinity };
  const series: LineSeries[] = [
    { name: `${opts.model}, measured (loopback)`, points: main.map((r) => [r.workers, 100 * r.efficiency]), color: PALETTE[0], lineWidth: 2.5, markers: true },
    { name: 'fit, loopback', points: curve(loopback, base, maxN), color: PALETTE[0], dash: [6, 4], markers: false },
    ...(main.some((r) => r.transport_floor)
      ? [{ name: 'ZeroMQ alone (same bytes, no trainer)', points: main.filter((r) => r.transport_floor).map((r): [number, number] => [r.workers, 100 * r.transport_floor!.efficiency]), color: '#888888', markers: true }]
      : []),
    ...LINKS_GBPS.map((gbps, i) => ({ name: `predicted, ${gbps} Gb/s`, points: curve(cluster, { ...base, gbps }, Math.max(1024, maxN)), color: PALETTE[i + 1], dash: [3, 3], markers: false })),
  ];
  for (const size of new Set(rows.filter((r) => r.model !== opts.model).map((r) => r.model))) {
    series.push({ name: `${size}, measured (loopback)`, points: rows.filter((r) => r.model === size).map((r) => [r.workers, 100 * r.efficiency]), color: PALETTE[5], markers: true });
  }
  writeFileSync(
    join(out, 'scale-efficiency.png'),
    renderLineChart({
      title: `Weak-scaling efficiency, ${opts.computeMs} ms per shard of ${opts.batchPerWorker}`,
      xLabel: 'workers',
      yLabel: 'efficiency (%)',
      series,
      log2X: true,
      yRange: [0, 105],
    }),
  );
  const stepSeries: LineSeries[] = [
    { name: 'step, median', points: main.map((r) => [r.workers, r.step_ms.median]), color: PALETTE[0], lineWidth: 2.5 },
    { name: 'step, p90', points: main.map((r) => [r.workers, r.step_ms.p90]), color: PALETTE[0], dash: [6, 4] },
    ...(main.some((r) => r.transport_floor)
      ? [{ name: 'step, ZeroMQ alone', points: main.filter((r) => r.transport_floor).map((r): [number, number] => [r.workers, r.transport_floor!.step_ms.median]), color: '#888888' }]
      : []),
    { name: 'overhead, median', points: main.map((r) => [r.workers, r.overhead_ms.median]), color: PALETTE[1] },
    { name: 'coordinator CPU per step', points: main.map((r) => [r.workers, r.coordinator_cpu_ms_per_step]), color: PALETTE[2] },
    { name: `compute (${opts.computeMs} ms)`, points: main.map((r) => [r.workers, opts.computeMs]), color: '#888888', dash: [2, 4], markers: false },
  ];
  writeFileSync(
    join(out, 'scale-step-time.png'),
    renderLineChart({ title: `Step time, ${opts.model}, ${opts.computeMs} ms per shard (loopback, this machine)`, xLabel: 'workers', yLabel: 'ms', series: stepSeries, log2X: true, logY: true }),
  );
  return ['scale-efficiency.png', 'scale-step-time.png'];
}

function gitCommit(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<number> {
  let opts: Options;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`bench:scale: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  if (!existsSync(COORDINATOR)) {
    process.stderr.write(`bench:scale: ${COORDINATOR} is missing: run npm run build first\n`);
    return 1;
  }
  mkdirSync(join(opts.out, 'runs'), { recursive: true });
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const machine = `${cpu}, ${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GB; load average at start ${loadavg().map((l) => l.toFixed(2)).join(' ')}; node ${process.version}; commit ${gitCommit()}`;
  const header = `Date ${new Date().toISOString()}; ${machine}.`;
  process.stdout.write(`${header}\n`);
  if (loadavg()[0] > cpus().length / 2) process.stdout.write(`note: the machine is busy (load ${loadavg()[0].toFixed(1)} on ${cpus().length} cores): step times include waiting for a core\n`);

  const plans: RunPlan[] = [
    ...workerCounts(opts.maxWorkers).map((n) => planRun(opts, opts.model, n)),
    ...(opts.sizeModel ? workerCounts(Math.min(opts.sizeMaxWorkers, opts.maxWorkers)).map((n) => planRun(opts, opts.sizeModel!, n)) : []),
  ];
  const paramsOf = (model: string): number => paramLayout(createModel(model as Parameters<typeof createModel>[0])).total;
  const rows: ScaleRow[] = [];
  for (const plan of plans) {
    process.stdout.write(`${plan.model}, ${plan.workers} workers: batch ${plan.batch}, ${plan.epochs} epochs of ${plan.stepsPerEpoch} steps … `);
    let row;
    let floor;
    try {
      const measured = await runOne(opts, plan, paramsOf(plan.model));
      row = measured.row;
      if (opts.floor) floor = await floorOf(opts, row, measured.resultParts);
    } catch (e) {
      process.stdout.write('failed\n');
      process.stderr.write(`bench:scale: ${(e as Error).message}\n`);
      return 1;
    }
    const single = rows.find((r) => r.model === plan.model && r.workers === 1);
    const singleFloor = single?.transport_floor?.step_ms.median ?? floor?.step_ms.median;
    const withEfficiency: ScaleRow = {
      ...row,
      efficiency: single ? single.step_ms.median / row.step_ms.median : 1,
      ...(floor && singleFloor !== undefined ? { transport_floor: { ...floor, efficiency: singleFloor / floor.step_ms.median } } : {}),
    };
    rows.push(withEfficiency);
    const floorNote = withEfficiency.transport_floor ? `; transport floor ${f1(withEfficiency.transport_floor.step_ms.median)} ms, ${pct(withEfficiency.transport_floor.efficiency)}` : '';
    process.stdout.write(`step ${f1(row.step_ms.median)} ms, efficiency ${pct(withEfficiency.efficiency)}${floorNote}\n`);
  }

  const params = paramsOf(opts.model);
  const wallFit = fitLinearCost(rows.map((r) => ({ workers: r.workers, params: r.params, ms: r.overhead_ms.median })));
  const cpuFit = fitLinearCost(rows.map((r) => ({ workers: r.workers, params: r.params, ms: r.coordinator_cpu_ms_per_step })));
  const loopback: StepModel = { latencyMs: 0, work: wallFit };
  // What a step costs with one worker beyond the coordinator's CPU: message hops and wake-ups.
  const single = rows.find((r) => r.model === opts.model && r.workers === 1);
  const latencyMs = single ? Math.max(0, single.overhead_ms.median - single.coordinator_cpu_ms_per_step) : 0;
  const cluster: StepModel = { latencyMs, work: cpuFit };
  const preds = predictions(cluster, opts, params);
  const plots = writePlots(opts.out, rows, loopback, cluster, opts, params);

  const targetLines = TARGETS.map((t) => {
    const r = rows.find((x) => x.model === opts.model && x.workers === t.workers);
    const applies = opts.computeMs === TARGET_COMPUTE_MS && opts.model === 'net';
    const result = !r ? 'n/a (not measured)' : !applies ? 'n/a (targets are for net at 12 ms)' : r.efficiency >= t.efficiency ? 'PASS' : 'FAIL';
    return `| efficiency at ${t.workers} workers ≥ ${100 * t.efficiency}% (T = ${TARGET_COMPUTE_MS} ms) | ${r ? pct(r.efficiency) : '–'} | ${r?.transport_floor ? pct(r.transport_floor.efficiency) : '–'} | ${result} |`;
  });
  const floors = floorTable(rows);
  const loopbackAt = (n: number): string => pct(predictEfficiency(loopback, { params, batchPerWorker: opts.batchPerWorker, computeMs: opts.computeMs, gbps: Infinity }, n));
  const md = [
    `${opts.model} with N simulated workers, ${opts.computeMs} ms per shard of ${opts.batchPerWorker} samples (global batch ${opts.batchPerWorker} × N), ${opts.steps} measured steps per run; samples sent as ${opts.pixels ? 'pixels (--pixels)' : 'indices (the workers hold the training set)'}; weights and gradients as ${opts.gradDtype}. ${header}`,
    '',
    measuredTable(rows),
    '',
    '| target | measured | ZeroMQ alone (the transport floor) | result |',
    '|---|---:|---:|---|',
    ...targetLines,
    '',
    ...(floors
      ? [
          'The transport floor: after each run, the same bytes per worker and step over the same kind of sockets (a ROUTER in another process, the DEALERs here, the same timers), with nothing encoded, reduced or updated (bench/scale/transport-floor.ts). No coordinator that sends every worker its weights can be faster on this machine.',
          '',
          floors,
          '',
        ]
      : []),
    '```',
    'step(N, P) = T + L + a + b·N + c·N·P + wire bytes / bandwidth (bench/scale/cost-model.ts)',
    ...describeFit('the coordinator\'s CPU per step (main and ZeroMQ I/O threads), fitted', cpuFit),
    ...describeFit('the step\'s overhead on this machine (simulated workers\' CPU and waits for a core included), fitted', wallFit),
    `  L = ${cluster.latencyMs.toFixed(3)} ms: the overhead with one worker beyond the coordinator's CPU (message hops, wake-ups; measured)`,
    `  this machine's fit: efficiency N=16 ${loopbackAt(16)}, N=64 ${loopbackAt(64)}, N=256 ${loopbackAt(256)}`,
    `  wire bytes per worker per step (busier direction): ${opts.model} ${kb(wireBytesPerStep(1, params, opts.batchPerWorker, opts.pixels ? 'pixels' : 'indices'))} KB, 10 M parameters ${kb(wireBytesPerStep(1, LARGE_PARAMS, opts.batchPerWorker))} KB`,
    '```',
    '',
    `Predicted weak-scaling efficiency on a cluster (T = ${opts.computeMs} ms; one coordinator doing the CPU work fitted above, plus L, plus its link's transfer time):`,
    '',
    predictionTable(preds),
    '',
  ].join('\n');
  process.stdout.write(`\n${md}\n`);
  writeFileSync(join(opts.out, 'scale.md'), md);
  writeFileSync(
    join(opts.out, 'scale.json'),
    `${JSON.stringify({ date: new Date().toISOString(), machine, options: opts, warmup_steps: WARMUP_STEPS, rows, cost_model: { cluster, loopback }, predictions: preds, plots }, null, 2)}\n`,
  );
  process.stdout.write(`wrote ${join(opts.out, 'scale.md')}, scale.json, ${plots.join(', ')}\n`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`bench:scale: ${(e as Error).message.split('\n')[0]}\n`);
    process.exit(1);
  },
);
