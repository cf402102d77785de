/**
 * `npm run bench`: this trainer against the PyTorch MNIST example on the same machine.
 *
 * One after the other (never concurrently), 1 epoch of the full MNIST at batch 64 unless told
 * otherwise: the reference (bench/reference_mnist.py) with 2 threads and with 1 thread, then
 * `coordinator --workers 0`, `--workers 1`, `--workers 2` (and `--workers 2 --deterministic` with
 * --deterministic-too), for each batch size of --batch-sizes. Prints one markdown table and the
 * project's targets (PASS/FAIL), and writes DIR/bench.md and DIR/bench.json (all raw numbers).
 * Exit status: 0 when every run finished (even if a target fails: it reports, it does not gate),
 * 1 when a run failed, 2 on bad flags.
 *
 * The ceiling rows (by default when --workers includes 2; --ceiling / --skip-ceiling) are the one
 * exception to "one after the other": `2 × workers=0 at once` starts two independent single-process
 * trainings at the same moment and adds up their samples/s. Two workers run the same compute side by side
 * plus a step's fixed cost, so over workers=1 this is what --workers 2 could reach with that cost at zero:
 * the two-core ceiling of the scaling target. With the reference, `2 × reference 1 thread at once`
 * does the same for PyTorch, against its 2 threads.
 *
 * With --batch-size-per-worker B, our runs scale weakly (each worker takes B samples a step, the
 * global batch is B × workers, the learning rate scales linearly) and the scaling target is the weak
 * one; the reference runs at batch B, what one process takes.
 *
 *   node dist/bench/bench.js [--quick] [--epochs N] [--train-limit N] [--batch-size B | --batch-sizes 64,256 | --batch-size-per-worker B]
 *                            [--workers 0,1,2] [--cpus 0,1] [--ceiling | --skip-ceiling] [--deterministic-too] [--skip-in-process] [--skip-reference] [--out DIR]
 */
import { spawn, spawnSync } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, totalmem } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const COORDINATOR = join(ROOT, 'dist', 'src', 'cli', 'coordinator.js');
const REFERENCE = join(ROOT, 'bench', 'reference_mnist.py');
const PYTHON = process.env.BENCH_PYTHON ?? '/usr/bin/python3';
const QUICK_TRAIN_LIMIT = 6400;
const MNIST_TRAIN_SIZE = 60000;

// The project's targets.
const TARGET = {
  vsReference2: 1.0,
  vsReference2Aim: 1.2,
  scaling2over1: 1.7,
  weakScaling2over1: 1.6,
  vsReference1: 0.7,
  accuracy: 0.93,
  workerRssMb: 400,
  coordinatorRssMb: 600,
  deterministicCost: 0.25,
};

const USAGE = `usage: node dist/bench/bench.js [options]   (or: npm run bench -- [options])
  --epochs N            epochs per run (default 1)
  --train-limit N       use only the first N training samples (default: all 60000)
  --quick               a fast check: --train-limit ${QUICK_TRAIN_LIMIT}
  --batch-size B        batch size of every run (default 64)
  --batch-sizes B1,B2   run everything at each of these batch sizes (e.g. 64,256)
  --batch-size-per-worker B
                        weak scaling: our runs take B samples per worker and step (global batch
                        B × workers, learning rate × workers after a warm-up); the reference, B
  --workers N1,N2,...   the worker counts of our runs (default 0,1,2; 0 = single process)
  --cpus LIST           run everything (reference too) on these CPUs only, with taskset -c LIST
                        (e.g. 0,1 or 0-2): "the same two cores" on a machine that has more
  --ceiling             also run the ceiling rows: two single-process trainings at once
                        (2 × workers=0, and 2 × reference 1 thread), their samples/s added up;
                        the default when --workers includes 2 and --cpus, if given, has 2 CPUs or more
  --skip-ceiling        do not run the ceiling rows
  --deterministic-too   also run --workers 2 --deterministic
  --skip-in-process     do not run --workers 2 --in-process-worker (run by default when --workers
                        includes 2: one of the two workers computes in the coordinator's process)
  --skip-reference      do not run the PyTorch reference (no ratio columns)
  --tfjs-kernels-too    also run --workers 1 and 2 with the training step on tfjs's wasm
                        kernels (MNIST_KERNELS=tfjs): the engine before the fused kernels
  --out DIR             where the runs, bench.md and bench.json go (default runs/bench-<timestamp>)
  -h, --help            this text`;

interface Options {
  epochs: number;
  trainLimit: number | undefined;
  batchSizes: number[];
  /** --batch-size-per-worker: our runs scale weakly, at batchSizes[0] per worker. */
  weak: boolean;
  deterministicToo: boolean;
  /** Also run --workers 2 --in-process-worker. */
  inProcess: boolean;
  skipReference: boolean;
  tfjsKernelsToo: boolean;
  workerCounts: number[];
  /** Run the ceiling rows: two single-process trainings at once. */
  ceiling: boolean;
  /** taskset's CPU list for every run, or undefined to run unpinned. */
  cpus: string | undefined;
  out: string;
}

class UsageError extends Error {}

function positiveInt(name: string, value: string): number {
  const n = Number(value);
  if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(n) || n <= 0) throw new UsageError(`${name} ${value}: must be a positive integer`);
  return n;
}

/** How many CPUs a taskset list such as `0,2-3` names. */
function cpuCount(list: string): number {
  const ids = new Set<number>();
  for (const part of list.split(',')) {
    const [first, last = first] = part.split('-').map(Number) as [number, number?];
    for (let id = first; id <= last; id++) ids.add(id);
  }
  return ids.size;
}

function stamp(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

function parseOptions(argv: string[]): Options | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      epochs: { type: 'string' },
      'train-limit': { type: 'string' },
      quick: { type: 'boolean', default: false },
      'batch-size': { type: 'string' },
      'batch-sizes': { type: 'string' },
      'batch-size-per-worker': { type: 'string' },
      'deterministic-too': { type: 'boolean', default: false },
      'skip-in-process': { type: 'boolean', default: false },
      'skip-reference': { type: 'boolean', default: false },
      'tfjs-kernels-too': { type: 'boolean', default: false },
      ceiling: { type: 'boolean', default: false },
      'skip-ceiling': { type: 'boolean', default: false },
      workers: { type: 'string' },
      cpus: { type: 'string' },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    console.log(USAGE);
    return undefined;
  }
  const batchFlags = (['batch-size', 'batch-sizes', 'batch-size-per-worker'] as const).filter((f) => values[f] !== undefined);
  if (batchFlags.length > 1) throw new UsageError(`give one of --batch-size, --batch-sizes and --batch-size-per-worker, not ${batchFlags.map((f) => `--${f}`).join(' and ')}`);
  const weak = values['batch-size-per-worker'] !== undefined;
  const batchSizes = weak
    ? [positiveInt('--batch-size-per-worker', values['batch-size-per-worker']!)]
    : values['batch-sizes'] !== undefined
      ? values['batch-sizes'].split(',').map((s) => positiveInt('--batch-sizes', s.trim()))
      : [values['batch-size'] !== undefined ? positiveInt('--batch-size', values['batch-size']) : 64];
  const workerCounts =
    values.workers !== undefined
      ? values.workers.split(',').map((s) => (s.trim() === '0' ? 0 : positiveInt('--workers', s.trim())))
      : [0, 1, 2];
  if (values.cpus !== undefined && !/^\d+(-\d+)?(,\d+(-\d+)?)*$/.test(values.cpus)) throw new UsageError(`--cpus ${values.cpus}: expected a CPU list such as 0,1 or 0-3`);
  if (values.ceiling && values['skip-ceiling']) throw new UsageError('give --ceiling or --skip-ceiling, not both');
  // Two trainings at once on one CPU measure time slicing, not what two cores give.
  const oneCpu = values.cpus !== undefined && cpuCount(values.cpus) < 2;
  if (values.ceiling && oneCpu) throw new UsageError(`--ceiling runs two trainings at once: --cpus ${values.cpus} gives them one CPU`);
  let trainLimit = values['train-limit'] !== undefined ? positiveInt('--train-limit', values['train-limit']) : undefined;
  if (values.quick && trainLimit === undefined) trainLimit = QUICK_TRAIN_LIMIT;
  return {
    epochs: values.epochs !== undefined ? positiveInt('--epochs', values.epochs) : 1,
    trainLimit,
    batchSizes: [...new Set(batchSizes)],
    weak,
    deterministicToo: values['deterministic-too'],
    inProcess: !values['skip-in-process'] && workerCounts.includes(2),
    skipReference: values['skip-reference'],
    tfjsKernelsToo: values['tfjs-kernels-too'],
    workerCounts: [...new Set(workerCounts)],
    ceiling: values.ceiling || (!values['skip-ceiling'] && !oneCpu && workerCounts.includes(2)),
    cpus: values.cpus,
    out: values.out !== undefined ? resolve(values.out) : join(ROOT, 'runs', `bench-${stamp(new Date())}`),
  };
}

// ---------------------------------------------------------------------------------------------
// Runs

interface ReferenceResult {
  threads: number;
  epochs: number;
  batch_size: number;
  train_samples_per_s: number;
  train_seconds: number;
  test_accuracy: number;
  test_loss: number;
  peak_rss_mb: number;
  torch_version: string;
}

interface Summary {
  train_samples_per_s: number;
  train_seconds: number;
  test_accuracy: number;
  test_loss: number;
  peak_rss_mb: number;
  workers: number;
  deterministic: boolean;
  distributed?: {
    worker_peak_rss_mb?: number;
    coordinator_ms_per_step?: number;
    step_overhead_ms?: { median: number; p90: number };
    bytes_sent_per_step?: number;
    bytes_received_per_step?: number;
  };
}

type RunKind = 'reference' | 'ours';

interface RunSpec {
  /** Row label, e.g. `workers=2 --deterministic`. */
  label: string;
  /** Short id: names the log file and, for ours, the --out folder. */
  id: string;
  kind: RunKind;
  batchSize: number;
  threads?: number;
  workers?: number;
  deterministic?: boolean;
  /** --in-process-worker: one of the workers computes in the coordinator's process. */
  inProcess?: boolean;
  /** Extra environment (the tfjs-kernel rows set MNIST_KERNELS=tfjs). */
  env?: Record<string, string>;
  command: string[];
}

/** A ceiling row: two runs started at the same moment; the row's samples/s is the sum of theirs. */
interface PairSpec {
  label: string;
  id: string;
  kind: RunKind;
  batchSize: number;
  runs: [RunSpec, RunSpec];
}

type RowSpec = RunSpec | PairSpec;

interface RunRecord {
  label: string;
  id: string;
  kind: RunKind;
  batch_size: number;
  threads?: number;
  workers?: number;
  deterministic?: boolean;
  /** Ran with --in-process-worker. */
  in_process_worker?: boolean;
  /** Ran on tfjs's kernels (MNIST_KERNELS=tfjs), not the fused ones. */
  tfjs_kernels?: boolean;
  command: string;
  log: string;
  wall_seconds: number;
  ok: boolean;
  error?: string;
  /** The reference's JSON line, or our summary.json, verbatim. */
  result?: ReferenceResult | Summary;
}

interface PairRecord {
  label: string;
  id: string;
  kind: RunKind;
  batch_size: number;
  at_once: true;
  /** From the start of both to the end of the later one. */
  wall_seconds: number;
  ok: boolean;
  error?: string;
  /** The sum of the two runs' train_samples_per_s. */
  train_samples_per_s?: number;
  /** The two runs, each with its raw result. */
  runs: [RunRecord, RunRecord];
}

type RowRecord = RunRecord | PairRecord;

function planRuns(opts: Options, withReference: boolean): RowSpec[] {
  const specs: RowSpec[] = [];
  const common = ['--epochs', String(opts.epochs), ...(opts.trainLimit !== undefined ? ['--train-limit', String(opts.trainLimit)] : [])];
  for (const b of opts.batchSizes) {
    const suffix = opts.weak ? `-weak${b}` : b === 64 ? '' : `-b${b}`;
    const batch = opts.weak ? `, ${b} per worker` : `, batch ${b}`;
    const showBatch = opts.batchSizes.length > 1 || b !== 64 || opts.weak;
    const reference = (threads: number, id: string, seed: number): RunSpec => ({
      label: `reference, ${threads} thread${threads > 1 ? 's' : ''}${showBatch ? batch : ''}`,
      id,
      kind: 'reference',
      batchSize: b,
      threads,
      command: [PYTHON, REFERENCE, '--threads', String(threads), '--batch-size', String(b), '--log-interval', '100', ...common, ...(seed !== 1 ? ['--seed', String(seed)] : [])],
    });
    if (withReference) {
      for (const threads of [2, 1]) specs.push(reference(threads, `ref-t${threads}${suffix}`, 1));
      if (opts.ceiling) {
        specs.push({
          label: `2 × reference 1 thread at once${showBatch ? batch : ''}`,
          id: `ref-t1x2${suffix}`,
          kind: 'reference',
          batchSize: b,
          runs: [reference(1, `ref-t1x2-a${suffix}`, 1), reference(1, `ref-t1x2-b${suffix}`, 2)],
        });
      }
    }
    const ours: Array<{ workers: number; deterministic: boolean; tfjsKernels?: boolean; inProcess?: boolean }> = opts.workerCounts.map((workers) => ({ workers, deterministic: false }));
    if (opts.inProcess) ours.push({ workers: 2, deterministic: false, inProcess: true });
    if (opts.deterministicToo) ours.push({ workers: 2, deterministic: true });
    // "Before": the same runs with the training step on tfjs's wasm kernels instead of the fused ones.
    if (opts.tfjsKernelsToo) ours.push({ workers: 1, deterministic: false, tfjsKernels: true }, { workers: 2, deterministic: false, tfjsKernels: true });
    const coordinatorCommand = (workers: number, id: string, extra: string[]): string[] => [
      process.execPath,
      COORDINATOR,
      '--workers',
      String(workers),
      opts.weak ? '--batch-size-per-worker' : '--batch-size',
      String(b),
      ...common,
      '--out',
      join(opts.out, id),
      '--log-interval',
      '100000',
      ...extra,
    ];
    for (const { workers, deterministic, tfjsKernels, inProcess } of ours) {
      const id = `w${workers}${inProcess ? '-inproc' : ''}${deterministic ? '-det' : ''}${tfjsKernels ? '-tfjs' : ''}${suffix}`;
      specs.push({
        label: `workers=${workers}${workers === 0 ? ' (single process)' : ''}${inProcess ? ' --in-process-worker' : ''}${deterministic ? ' --deterministic' : ''}${tfjsKernels ? ', tfjs kernels' : ''}${showBatch ? batch : ''}`,
        id,
        kind: 'ours',
        batchSize: b,
        workers,
        deterministic,
        ...(inProcess ? { inProcess } : {}),
        ...(tfjsKernels ? { env: { MNIST_KERNELS: 'tfjs' } } : {}),
        command: coordinatorCommand(workers, id, [...(deterministic ? ['--deterministic'] : []), ...(inProcess ? ['--in-process-worker'] : [])]),
      });
    }
    if (opts.ceiling) {
      // The workers=0 row's flags (under weak scaling: batch B, what one worker computes per step),
      // twice; the second with another seed, so that the two are independent trainings.
      const single = (id: string, seed: number): RunSpec => ({
        label: `workers=0 (single process)${showBatch ? batch : ''}`,
        id,
        kind: 'ours',
        batchSize: b,
        workers: 0,
        deterministic: false,
        command: coordinatorCommand(0, id, seed !== 1 ? ['--seed', String(seed)] : []),
      });
      specs.push({
        label: `2 × workers=0 at once${showBatch ? batch : ''}`,
        id: `w0x2${suffix}`,
        kind: 'ours',
        batchSize: b,
        runs: [single(`w0x2-a${suffix}`, 1), single(`w0x2-b${suffix}`, 2)],
      });
    }
  }
  return specs;
}

/** Every command of the plan, pinned to --cpus when given (both runs of a pair on the same CPUs). */
function pinned(specs: RowSpec[], cpus: string | undefined): RowSpec[] {
  if (cpus === undefined) return specs;
  const pin = (s: RunSpec): RunSpec => ({ ...s, command: ['taskset', '-c', cpus, ...s.command] });
  return specs.map((s) => ('runs' in s ? { ...s, runs: [pin(s.runs[0]), pin(s.runs[1])] } : pin(s)));
}

function quote(args: string[]): string {
  return args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** Runs one command to completion, its stdout and stderr into `logFile`; resolves with its stdout. */
function runLogged(
  command: string[],
  logFile: string,
  env: Record<string, string> = {},
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string }> {
  return new Promise((resolvePromise, reject) => {
    const log = createWriteStream(logFile);
    log.write(`$ ${Object.entries(env).map(([k, v]) => `${k}=${v} `).join('')}${quote(command)}\n`);
    const child = spawn(command[0]!, command.slice(1), { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1', ...env } });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      log.write(chunk);
    });
    child.stderr.on('data', (chunk: Buffer) => log.write(chunk));
    child.on('error', (e) => {
      log.end();
      reject(e);
    });
    child.on('close', (code, signal) => log.end(() => resolvePromise({ code, signal, stdout })));
  });
}

function lastJsonLine(stdout: string): unknown {
  const lines = stdout.trim().split('\n').reverse();
  for (const line of lines) {
    const t = line.trim();
    if (t.startsWith('{')) return JSON.parse(t);
  }
  throw new Error('no JSON line on stdout');
}

async function execute(spec: RunSpec, out: string): Promise<RunRecord> {
  const logFile = join(out, `${spec.id}.log`);
  const record: RunRecord = {
    label: spec.label,
    id: spec.id,
    kind: spec.kind,
    batch_size: spec.batchSize,
    ...(spec.threads !== undefined ? { threads: spec.threads } : {}),
    ...(spec.workers !== undefined ? { workers: spec.workers, deterministic: spec.deterministic ?? false } : {}),
    ...(spec.inProcess ? { in_process_worker: true } : {}),
    ...(spec.env?.MNIST_KERNELS === 'tfjs' ? { tfjs_kernels: true } : {}),
    command: quote(spec.command),
    log: logFile,
    wall_seconds: 0,
    ok: false,
  };
  const t0 = performance.now();
  try {
    const { code, signal, stdout } = await runLogged(spec.command, logFile, spec.env);
    record.wall_seconds = (performance.now() - t0) / 1000;
    if (code !== 0) throw new Error(signal ? `killed by ${signal}` : `exit status ${code}`);
    if (spec.kind === 'reference') {
      record.result = lastJsonLine(stdout) as ReferenceResult;
    } else {
      const file = join(out, spec.id, 'summary.json');
      if (!existsSync(file)) throw new Error(`no ${relative(ROOT, file)}`);
      record.result = JSON.parse(readFileSync(file, 'utf8')) as Summary;
    }
    record.ok = true;
  } catch (e) {
    record.wall_seconds ||= (performance.now() - t0) / 1000;
    record.error = `${(e as Error).message} (see ${relative(process.cwd(), logFile) || logFile})`;
  }
  return record;
}

/** Both runs of a pair, started at the same moment. */
async function executePair(spec: PairSpec, out: string): Promise<PairRecord> {
  const t0 = performance.now();
  const runs = (await Promise.all(spec.runs.map((run) => execute(run, out)))) as [RunRecord, RunRecord];
  const ok = runs.every((r) => r.ok && r.result);
  const errors = runs.filter((r) => !r.ok).map((r) => `${r.id}: ${r.error}`);
  return {
    label: spec.label,
    id: spec.id,
    kind: spec.kind,
    batch_size: spec.batchSize,
    at_once: true,
    wall_seconds: (performance.now() - t0) / 1000,
    ok,
    ...(errors.length ? { error: errors.join('; ') } : {}),
    ...(ok ? { train_samples_per_s: runs.reduce((sum, r) => sum + r.result!.train_samples_per_s, 0) } : {}),
    runs,
  };
}

// ---------------------------------------------------------------------------------------------
// Report

interface Check {
  target: string;
  value: string;
  status: 'PASS' | 'FAIL' | 'n/a';
  note?: string;
}

function fmt(n: number | undefined, digits: number): string {
  return n === undefined || !Number.isFinite(n) ? '–' : n.toFixed(digits);
}

function ratio(a: number | undefined, b: number | undefined): number | undefined {
  return a !== undefined && b !== undefined && b > 0 ? a / b : undefined;
}

function markdownTable(header: string[], rows: string[][], rightAligned: boolean[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (rightAligned[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (rightAligned[i] ? `${'-'.repeat(w + 1)}:` : `${'-'.repeat(w + 2)}`)).join('|')}|`;
  return [line(header), rule, ...rows.map(line)].join('\n');
}

function samplesPerS(r: RunRecord | undefined): number | undefined {
  return r?.ok ? r.result?.train_samples_per_s : undefined;
}

function findRun(records: RunRecord[], pred: (r: RunRecord) => boolean): RunRecord | undefined {
  return records.find(pred);
}

/** The single runs of the table, without the pairs (every ratio's denominator is a single run). */
function singleRuns(rows: RowRecord[]): RunRecord[] {
  return rows.filter((r): r is RunRecord => !('runs' in r));
}

function buildTable(rows: RowRecord[], withReference: boolean): string {
  const records = singleRuns(rows);
  const header = ['run', 'samples/s'];
  if (withReference) header.push('× reference (2 threads)', '× reference (1 thread)');
  header.push('× workers=1', 'test accuracy', 'peak RSS coordinator MB', 'peak RSS worker MB', 'coordinator ms/step', 'step overhead ms (median / p90)', 'KB sent/step', 'KB received/step', 'train s');
  const cells = rows.map((r) => {
    const ref = (threads: number) => samplesPerS(findRun(records, (x) => x.kind === 'reference' && x.threads === threads && x.batch_size === r.batch_size));
    const tfjsKernels = 'runs' in r ? undefined : r.tfjs_kernels;
    // Scaling: against one worker of the same kernels and batch size.
    const oneWorker =
      r.kind === 'ours'
        ? samplesPerS(findRun(records, (x) => x.kind === 'ours' && x.workers === 1 && !x.deterministic && x.tfjs_kernels === tfjsKernels && x.batch_size === r.batch_size))
        : undefined;
    const failed = [r.label, 'FAILED', ...(withReference ? ['', ''] : []), '', '', '', '', '', '', '', '', ''];
    if ('runs' in r) {
      if (!r.ok || r.train_samples_per_s === undefined) return failed;
      // Both runs' own figures side by side; only samples/s is the sum.
      const both = (value: (x: ReferenceResult | Summary) => string): string => r.runs.map((x) => value(x.result!)).join(' / ');
      return [
        r.label,
        fmt(r.train_samples_per_s, 0),
        ...(withReference ? [fmt(ratio(r.train_samples_per_s, ref(2)), 2), fmt(ratio(r.train_samples_per_s, ref(1)), 2)] : []),
        fmt(ratio(r.train_samples_per_s, oneWorker), 2),
        both((x) => `${fmt(100 * x.test_accuracy, 2)}%`),
        both((x) => fmt(x.peak_rss_mb, 0)),
        '–',
        '–',
        '',
        '–',
        '–',
        both((x) => fmt(x.train_seconds, 1)),
      ];
    }
    if (!r.ok || !r.result) return failed;
    const sps = r.result.train_samples_per_s;
    const d = r.kind === 'ours' ? (r.result as Summary).distributed : undefined;
    return [
      r.label,
      fmt(sps, 0),
      ...(withReference ? [fmt(ratio(sps, ref(2)), 2), fmt(ratio(sps, ref(1)), 2)] : []),
      fmt(ratio(sps, oneWorker), 2),
      `${fmt(100 * r.result.test_accuracy, 2)}%`,
      fmt(r.result.peak_rss_mb, 0),
      fmt(d?.worker_peak_rss_mb, 0),
      fmt(d?.coordinator_ms_per_step, 2),
      d?.step_overhead_ms ? `${fmt(d.step_overhead_ms.median, 2)} / ${fmt(d.step_overhead_ms.p90, 2)}` : '',
      fmt(d?.bytes_sent_per_step !== undefined ? d.bytes_sent_per_step / 1024 : undefined, 1),
      fmt(d?.bytes_received_per_step !== undefined ? d.bytes_received_per_step / 1024 : undefined, 1),
      fmt(r.result.train_seconds, 1),
    ];
  });
  return markdownTable(header, cells, header.map((_, i) => i > 0));
}

function buildChecks(records: RunRecord[], opts: Options, withReference: boolean): Check[] {
  const b = opts.batchSizes[0]!;
  const at = (pred: (r: RunRecord) => boolean) => findRun(records, (r) => r.batch_size === b && pred(r));
  const ref2 = samplesPerS(at((r) => r.kind === 'reference' && r.threads === 2));
  const ref1 = samplesPerS(at((r) => r.kind === 'reference' && r.threads === 1));
  const fused = (r: RunRecord): boolean => r.kind === 'ours' && !r.tfjs_kernels && !r.in_process_worker;
  const w1 = samplesPerS(at((r) => fused(r) && r.workers === 1 && !r.deterministic));
  const w2 = samplesPerS(at((r) => fused(r) && r.workers === 2 && !r.deterministic));
  const w2inProcess = samplesPerS(at((r) => r.kind === 'ours' && r.in_process_worker === true && r.workers === 2 && !r.deterministic));
  const w2det = samplesPerS(at((r) => fused(r) && r.workers === 2 && r.deterministic === true));
  const ours = records.filter((r) => r.kind === 'ours' && r.ok && r.result) as Array<RunRecord & { result: Summary }>;
  const checks: Check[] = [];
  const batchNote = opts.batchSizes.length > 1 ? ` (batch ${b})` : '';
  const noRef = withReference ? 'a run failed' : 'reference not run';

  const check = (target: string, value: number | undefined, ok: (v: number) => boolean, show: (v: number) => string, missing: string, note?: (v: number) => string | undefined): void => {
    if (value === undefined || !Number.isFinite(value)) {
      checks.push({ target, value: '–', status: 'n/a', note: missing });
    } else {
      const n = note?.(value);
      checks.push({ target, value: show(value), status: ok(value) ? 'PASS' : 'FAIL', ...(n ? { note: n } : {}) });
    }
  };
  const x = (v: number) => `${v.toFixed(2)}×`;

  check(
    `workers=2 ≥ ${TARGET.vsReference2.toFixed(1)}× reference (2 threads)${batchNote}`,
    ratio(w2, ref2),
    (v) => v >= TARGET.vsReference2,
    x,
    noRef,
    (v) => `aim ${TARGET.vsReference2Aim}×: ${v >= TARGET.vsReference2Aim ? 'met' : 'not met'}`,
  );
  const notPlanned = (n: number): string => (opts.workerCounts.includes(n) ? 'a run failed' : `workers=${n} not in --workers`);
  const scalingTarget = opts.weak ? TARGET.weakScaling2over1 : TARGET.scaling2over1;
  const scalingNote = opts.weak ? ` (weak scaling, ${b} per worker)` : batchNote;
  check(`workers=2 / workers=1 ≥ ${scalingTarget}×${scalingNote}`, ratio(w2, w1), (v) => v >= scalingTarget, x, opts.workerCounts.includes(1) ? notPlanned(2) : notPlanned(1));
  if (opts.inProcess) {
    check(
      `workers=2 --in-process-worker ≥ ${TARGET.vsReference2.toFixed(1)}× reference (2 threads)${batchNote}`,
      ratio(w2inProcess, ref2),
      (v) => v >= TARGET.vsReference2,
      x,
      noRef,
      (v) => `aim ${TARGET.vsReference2Aim}×: ${v >= TARGET.vsReference2Aim ? 'met' : 'not met'}`,
    );
    check(`workers=2 --in-process-worker / workers=1 ≥ ${scalingTarget}×${scalingNote}`, ratio(w2inProcess, w1), (v) => v >= scalingTarget, x, opts.workerCounts.includes(1) ? 'a run failed' : notPlanned(1));
  }
  check(`workers=1 ≥ ${TARGET.vsReference1}× reference (1 thread)${batchNote}`, ratio(w1, ref1), (v) => v >= TARGET.vsReference1, x, noRef);

  const fullData = opts.trainLimit === undefined || opts.trainLimit >= MNIST_TRAIN_SIZE;
  const oursAtB = ours.filter((r) => r.batch_size === b);
  const minAcc = oursAtB.length ? oursAtB.reduce((m, r) => (r.result.test_accuracy < m.result.test_accuracy ? r : m)) : undefined;
  check(
    `test accuracy after 1 epoch ≥ ${TARGET.accuracy * 100}% (every run of ours${batchNote})`,
    fullData && opts.epochs === 1 ? minAcc?.result.test_accuracy : undefined,
    (v) => v >= TARGET.accuracy,
    (v) => `${(100 * v).toFixed(2)}% (lowest: ${minAcc?.label})`,
    fullData && opts.epochs === 1 ? 'no run of ours finished' : 'only with the full training set and --epochs 1',
  );

  const distributed = ours.filter((r) => r.result.distributed?.worker_peak_rss_mb !== undefined);
  const maxWorker = distributed.length
    ? distributed.reduce((m, r) => ((r.result.distributed!.worker_peak_rss_mb ?? 0) > (m.result.distributed!.worker_peak_rss_mb ?? 0) ? r : m))
    : undefined;
  check(
    `worker peak RSS ≤ ${TARGET.workerRssMb} MB`,
    maxWorker?.result.distributed?.worker_peak_rss_mb,
    (v) => v <= TARGET.workerRssMb,
    (v) => `${v.toFixed(0)} MB (${maxWorker?.label})`,
    'no distributed run finished',
  );
  const maxCoord = ours.length ? ours.reduce((m, r) => (r.result.peak_rss_mb > m.result.peak_rss_mb ? r : m)) : undefined;
  check(
    `coordinator peak RSS ≤ ${TARGET.coordinatorRssMb} MB (every run of ours, workers=0 included)`,
    maxCoord?.result.peak_rss_mb,
    (v) => v <= TARGET.coordinatorRssMb,
    (v) => `${v.toFixed(0)} MB (${maxCoord?.label})`,
    'no run of ours finished',
  );
  if (opts.deterministicToo) {
    const cost = w2 !== undefined && w2det !== undefined && w2 > 0 ? 1 - w2det / w2 : undefined;
    check(
      `--deterministic costs ≤ ${TARGET.deterministicCost * 100}% of fast mode's throughput (workers=2)${batchNote}`,
      cost,
      (v) => v <= TARGET.deterministicCost,
      (v) => `${(100 * v).toFixed(1)}% slower`,
      'a run failed',
    );
  }
  return checks;
}

interface CeilingFigures {
  /** 2 × workers=0 at once over workers=1: what workers=2 could reach with a step's fixed cost at zero. */
  pair_over_workers1?: number;
  /** 2 × workers=0 at once over workers=0 alone: how well two independent streams run side by side. */
  pair_over_workers0?: number;
  workers2_over_workers1?: number;
  /** workers=2 --in-process-worker over workers=1. */
  workers2_in_process_over_workers1?: number;
  /** 2 × reference 1 thread at once over the reference with 2 threads, and over 1 thread. */
  reference_pair_over_threads2?: number;
  reference_pair_over_threads1?: number;
  reference_threads2_over_threads1?: number;
}

/** The lines under the targets that say how far the scaling target is from what two cores give. */
function ceilingReport(rows: RowRecord[], opts: Options): { lines: string[]; figures: CeilingFigures } {
  const b = opts.batchSizes[0]!;
  const records = singleRuns(rows);
  const pair = (kind: RunKind) => rows.find((r): r is PairRecord => 'runs' in r && r.kind === kind && r.batch_size === b);
  const single = (pred: (r: RunRecord) => boolean) => samplesPerS(findRun(records, (r) => r.batch_size === b && pred(r)));
  const fused = (r: RunRecord): boolean => r.kind === 'ours' && !r.tfjs_kernels && !r.deterministic && !r.in_process_worker;
  const w0 = single((r) => fused(r) && r.workers === 0);
  const w1 = single((r) => fused(r) && r.workers === 1);
  const w2 = single((r) => fused(r) && r.workers === 2);
  const w2inProcess = single((r) => r.kind === 'ours' && !r.deterministic && r.in_process_worker === true && r.workers === 2);
  const ref1 = single((r) => r.kind === 'reference' && r.threads === 1);
  const ref2 = single((r) => r.kind === 'reference' && r.threads === 2);
  const ours = pair('ours');
  const reference = pair('reference');
  const figures: CeilingFigures = {
    pair_over_workers1: ratio(ours?.train_samples_per_s, w1),
    pair_over_workers0: ratio(ours?.train_samples_per_s, w0),
    workers2_over_workers1: ratio(w2, w1),
    workers2_in_process_over_workers1: ratio(w2inProcess, w1),
    reference_pair_over_threads2: ratio(reference?.train_samples_per_s, ref2),
    reference_pair_over_threads1: ratio(reference?.train_samples_per_s, ref1),
    reference_threads2_over_threads1: ratio(ref2, ref1),
  };
  const x = (v: number | undefined) => (v === undefined ? '–' : `${v.toFixed(2)}×`);
  const target = opts.weak ? TARGET.weakScaling2over1 : TARGET.scaling2over1;
  const lines: string[] = [];
  if (ours) {
    const why = !ours.ok ? ' (a run failed)' : w1 === undefined ? (opts.workerCounts.includes(1) ? ' (workers=1 failed)' : ' (workers=1 not in --workers)') : '';
    lines.push(
      `two-core ceiling: 2 × workers=0 at once = ${x(figures.pair_over_workers1)} workers=1${why}` +
        `${figures.pair_over_workers0 !== undefined ? ` (${x(figures.pair_over_workers0)} one workers=0 alone)` : ''}; ` +
        `the target for workers=2 is ${target}×, workers=2 measured ${x(figures.workers2_over_workers1)}` +
        `${figures.workers2_in_process_over_workers1 !== undefined ? `, with --in-process-worker ${x(figures.workers2_in_process_over_workers1)}` : ''}.`,
    );
  }
  if (reference) {
    lines.push(
      `PyTorch: 2 × 1 thread at once = ${x(figures.reference_pair_over_threads1)} its 1 thread, ${x(figures.reference_pair_over_threads2)} its 2 threads ` +
        `(2 threads = ${x(figures.reference_threads2_over_threads1)} 1 thread)${reference.ok ? '' : ' (a run failed)'}.`,
    );
  }
  return { lines, figures };
}

function checksTable(checks: Check[]): string {
  return markdownTable(
    ['target', 'measured', 'result'],
    checks.map((c) => [c.target, c.value + (c.note ? ` — ${c.note}` : ''), c.status]),
    [false, false, false],
  );
}

function gitCommit(): string | undefined {
  const r = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' });
  if (r.status !== 0) return undefined;
  const dirty = spawnSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: ROOT, encoding: 'utf8' });
  return r.stdout.trim() + (dirty.status === 0 && dirty.stdout.trim() ? ' (with uncommitted changes)' : '');
}

function torchAvailable(): { ok: boolean; version?: string; why?: string } {
  const r = spawnSync(PYTHON, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' });
  if (r.status === 0) return { ok: true, version: r.stdout.trim() };
  const why = r.error ? r.error.message : (r.stderr.trim().split('\n').pop() ?? `exit status ${r.status}`);
  return { ok: false, why };
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  let opts: Options | undefined;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (e) {
    console.error(`bench: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (!opts) return 0;
  if (!existsSync(COORDINATOR)) {
    console.error(`bench: ${relative(process.cwd(), COORDINATOR)} is missing; build first: npx tsc -p tsconfig.json (or npm run bench)`);
    return 1;
  }

  let withReference = !opts.skipReference;
  let torchVersion: string | undefined;
  if (withReference) {
    const t = torchAvailable();
    if (t.ok) {
      torchVersion = t.version;
    } else {
      withReference = false;
      console.error(`bench: PyTorch is not usable with ${PYTHON} (${t.why}); install it with: apt-get install python3-torch`);
      console.error('bench: going on without the reference (no ratio columns)');
    }
  }

  mkdirSync(opts.out, { recursive: true });
  const started = new Date();
  const meta = {
    date: started.toISOString(),
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    available_parallelism: availableParallelism(),
    memory_gb: totalmem() / 2 ** 30,
    load_average_at_start: loadavg(),
    node: process.version,
    torch: torchVersion ?? null,
    commit: gitCommit() ?? null,
    pinned_to_cpus: opts.cpus ?? null,
  };
  if (opts.cpus !== undefined && spawnSync('taskset', ['-c', opts.cpus, 'true']).status !== 0) {
    console.error(`bench: cannot pin to CPUs ${opts.cpus} (is taskset installed, and do those CPUs exist?)`);
    return 1;
  }
  const specs = pinned(planRuns(opts, withReference), opts.cpus);
  const dataNote = `${opts.trainLimit !== undefined ? `first ${opts.trainLimit} training samples` : 'full MNIST'}, ${opts.epochs} epoch${opts.epochs > 1 ? 's' : ''}`;
  const pairs = specs.filter((s) => 'runs' in s).length;
  console.error(`bench: ${specs.length} runs, one after the other${pairs ? ` (the ${pairs} ceiling row${pairs > 1 ? 's' : ''}: two at once)` : ''} (${dataNote}); logs and run folders in ${relative(process.cwd(), opts.out) || opts.out}`);
  if (meta.load_average_at_start[0]! > meta.cores * 0.5) {
    console.error(`bench: note: load average ${meta.load_average_at_start[0]!.toFixed(2)} on ${meta.cores} cores; other work on the machine skews the timings`);
  }

  const rows: RowRecord[] = [];
  for (const [i, spec] of specs.entries()) {
    process.stderr.write(`[${i + 1}/${specs.length}] ${spec.label} … `);
    if ('runs' in spec) {
      const pair = await executePair(spec, opts.out);
      rows.push(pair);
      if (pair.ok) {
        const each = pair.runs.map((r) => r.result!.train_samples_per_s.toFixed(0)).join(' + ');
        process.stderr.write(`${each} = ${pair.train_samples_per_s!.toFixed(0)} samples/s, ${pair.wall_seconds.toFixed(0)} s\n`);
      } else {
        process.stderr.write(`FAILED: ${pair.error}\n`);
      }
      continue;
    }
    const rec = await execute(spec, opts.out);
    rows.push(rec);
    if (rec.ok && rec.result) {
      process.stderr.write(`${rec.result.train_samples_per_s.toFixed(0)} samples/s, accuracy ${(100 * rec.result.test_accuracy).toFixed(2)}%, ${rec.wall_seconds.toFixed(0)} s\n`);
    } else {
      process.stderr.write(`FAILED: ${rec.error}\n`);
    }
  }

  const checks = buildChecks(singleRuns(rows), opts, withReference);
  const ceiling = ceilingReport(rows, opts);
  const table = buildTable(rows, withReference);
  const failed = rows.filter((r) => !r.ok);
  const lines = [
    `## Benchmark ${meta.date.slice(0, 10)}`,
    '',
    `${dataNote}, ${opts.weak ? `weak scaling: ${opts.batchSizes[0]} samples per worker and step (global batch ${opts.batchSizes[0]} × workers, --lr-scaling linear; the reference at batch ${opts.batchSizes[0]})` : `batch ${opts.batchSizes.join(' and ')}`}, seed 1. ` +
      `Date ${meta.date}; CPU ${meta.cpu}, ${meta.cores} cores (${meta.available_parallelism} available), ${meta.memory_gb.toFixed(0)} GB; ` +
      `${opts.cpus !== undefined ? `every run pinned to CPUs ${opts.cpus}; ` : ''}` +
      `load average at start ${meta.load_average_at_start.map((l) => l.toFixed(2)).join(' ')}; node ${meta.node}; ` +
      `torch ${torchVersion ?? (opts.skipReference ? '(skipped)' : '(not installed: apt-get install python3-torch)')}` +
      `${meta.commit ? `; commit ${meta.commit}` : ''}.`,
    '',
    table,
    '',
    `Targets${opts.batchSizes.length > 1 ? ` (at batch ${opts.batchSizes[0]})` : ''}:`,
    '',
    checksTable(checks),
    ...(ceiling.lines.length ? ['', ...ceiling.lines] : []),
    ...(failed.length ? ['', `Failed runs: ${failed.map((r) => `${r.label}: ${r.error}`).join('; ')}`] : []),
    '',
  ];
  const md = lines.join('\n');
  console.log(`\n${md}`);
  writeFileSync(join(opts.out, 'bench.md'), md);
  writeFileSync(
    join(opts.out, 'bench.json'),
    `${JSON.stringify({ meta, options: { ...opts, with_reference: withReference }, targets: TARGET, runs: rows, checks, ceiling: ceiling.figures, finished_at: new Date().toISOString() }, null, 2)}\n`,
  );
  console.error(`bench: wrote ${relative(process.cwd(), join(opts.out, 'bench.md'))} and bench.json`);
  return failed.length ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    console.error(`bench: ${(e as Error).stack ?? String(e)}`);
    process.exitCode = 1;
  },
);
