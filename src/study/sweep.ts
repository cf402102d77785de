/**
 * `coordinator sweep`: one training run per combination of flag values, one after another, in
 * this process (through `train`, as `coordinator` runs one), each into DIR/runs/<name>; then
 * DIR/sweep.json, DIR/sweep.md and plots that compare the runs. A sweep started again skips the
 * runs that finished (summary.json present) and resumes those that have a checkpoint.
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { DEFAULTS, type TrainConfig } from '../config.js';
import { train as trainRun, type TrainOptions } from '../coordinator/train.js';
import {
  PALETTE, type LineSeries, type Point, type TrainRecord, type TestRecord,
  ema, parseMetricsJsonl, renderBarChart, renderLineChart,
} from '../report/index.js';
import { CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE } from '../training/checkpoint.js';
import { METRICS_FILE, type RunSummary, SUMMARY_FILE } from '../training/loop.js';
import { UsageError, UserError } from '../util/errors.js';
import { makeDirs } from '../util/fs.js';

import { ACCURACY_BARS, LOSS_CURVES, RUNS_DIR, SWEEP_JSON, SWEEP_MD, TEST_ACCURACY_CURVES } from './files.js';
export { ACCURACY_BARS, LOSS_CURVES, RUNS_DIR, SWEEP_JSON, SWEEP_MD, TEST_ACCURACY_CURVES };

export type FlagValue = number | string | boolean;

/** One flag's values; `flag` is its long name without dashes (`batch-size`). */
export interface SweepAxis {
  flag: string;
  values: readonly FlagValue[];
}

/** One combination of the axes' values. */
export interface SweepPoint {
  /** Folder name under DIR/runs, from the varying flags: `batch-size=50,lr=0.01`. */
  name: string;
  /** Every axis's value in this combination, by flag name. */
  values: Record<string, FlagValue>;
  /** The varying flags' values only. */
  varied: Record<string, FlagValue>;
}

export interface SweepRunSpec {
  name: string;
  /** The varying flags' values for this run, by flag name. */
  varied: Record<string, FlagValue>;
  /** Every training flag of the run, by flag name (`no-cuda` for --no-cuda), for sweep.json. */
  flags: Record<string, FlagValue>;
  /** The run's configuration; its outDir is replaced by DIR/runs/<name>. */
  config: TrainConfig;
}

export type SweepStatus = 'finished' | 'failed' | 'interrupted' | 'pending';

export interface SweepEntry {
  name: string;
  /** The run folder, relative to the sweep folder. */
  dir: string;
  varied: Record<string, FlagValue>;
  /** Every training flag of the run, by flag name. */
  flags: Record<string, FlagValue>;
  status: SweepStatus;
  /** True when the run had finished before this invocation and was skipped. */
  reused: boolean;
  error?: string;
  summary: RunSummary | null;
}

function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

function formatValue(v: FlagValue): string {
  return String(v).replace(/[^A-Za-z0-9._+-]/g, '_');
}

/** The folder name of a run: `flag=value` of each varying flag, joined with commas. */
export function runName(varied: ReadonlyArray<readonly [string, FlagValue]>): string {
  if (varied.length === 0) return 'run';
  return varied.map(([flag, v]) => `${flag}=${formatValue(v)}`).join(',');
}

/**
 * Every combination of the axes' values (the first axis varies slowest). Repeated values count
 * once; only axes with several values vary and name the runs.
 */
export function sweepGrid(axes: readonly SweepAxis[]): SweepPoint[] {
  const distinct = axes.map((a) => ({ flag: a.flag, values: [...new Set(a.values)] }));
  for (const a of distinct) if (a.values.length === 0) throw new UsageError(`--${a.flag}: no value`);
  let combos: Array<Array<readonly [(typeof distinct)[number], FlagValue]>> = [[]];
  for (const axis of distinct) combos = combos.flatMap((c) => axis.values.map((v) => [...c, [axis, v] as const]));
  return combos.map((combo) => {
    const varied = combo.filter(([axis]) => axis.values.length > 1).map(([axis, v]) => [axis.flag, v] as const);
    return {
      name: runName(varied),
      values: Object.fromEntries(combo.map(([axis, v]) => [axis.flag, v])),
      varied: Object.fromEntries(varied),
    };
  });
}

export interface SweepOptions {
  outDir: string;
  runs: readonly SweepRunSpec[];
  /** Training flags given on the command line (camel-cased), as `train` takes them for --resume. */
  given?: ReadonlySet<string>;
  /** The flags that are the same for every run, as words for sweep.md (`--epochs 1`). */
  fixed?: readonly string[];
  /** Prints progress lines (default: stdout). */
  print?: (line: string) => void;
  /** Prints warnings (default: stderr). */
  warn?: (line: string) => void;
  /** The training function (tests may replace it). */
  train?: (config: TrainConfig, opts: TrainOptions) => Promise<RunSummary>;
  /** --in-process-worker for every run with workers (a --workers 0 run trains in one process anyway). */
  inProcessWorker?: boolean;
  /**
   * --metrics HOST:PORT: each run, while it trains, serves Prometheus metrics there, labelled with its
   * name (`run="lr=0.1"`); between runs nothing answers.
   */
  metrics?: string;
}

export interface SweepResult {
  entries: SweepEntry[];
  files: string[];
  interrupted: boolean;
  failed: number;
}

/** Config fields that may differ between a finished run and the sweep without changing what it trained. */
const EXECUTION_FIELDS = new Set(['outDir', 'workers', 'noCuda', 'engine', 'dataDir', 'logInterval', 'checkpointEvery']);

function configDifferences(stored: TrainConfig, wanted: TrainConfig): string[] {
  const a = stored as unknown as Record<string, unknown>;
  const b = wanted as unknown as Record<string, unknown>;
  const defaults = DEFAULTS as Record<string, unknown>;
  // A field the stored config lacks is unset there, or newer than the run: then its default applies.
  const storedValue = (k: string): unknown => (k in a ? a[k] : defaults[k]);
  return [...new Set([...Object.keys(a), ...Object.keys(b)])]
    .filter((k) => !EXECUTION_FIELDS.has(k) && storedValue(k) !== b[k])
    .map((k) => `--${kebab(k)} ${storedValue(k) ?? '(unset)'} (the sweep asks for ${b[k] ?? '(unset)'})`);
}

export async function runSweep(opts: SweepOptions): Promise<SweepResult> {
  const outDir = resolve(opts.outDir);
  const print = opts.print ?? ((l: string) => process.stdout.write(`${l}\n`));
  const warn = opts.warn ?? ((l: string) => process.stderr.write(`sweep: warning: ${l}\n`));
  const train = opts.train ?? trainRun;
  const names = new Set<string>();
  for (const r of opts.runs) {
    if (names.has(r.name)) throw new UsageError(`two runs of the sweep would both be named ${r.name}`);
    names.add(r.name);
  }
  try {
    makeDirs(join(outDir, RUNS_DIR));
  } catch (e) {
    throw new UserError(`--out ${opts.outDir}: cannot write there (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }

  const entries: SweepEntry[] = opts.runs.map((r) => ({
    name: r.name,
    dir: `${RUNS_DIR}/${r.name}`,
    varied: r.varied,
    flags: r.flags,
    status: 'pending',
    reused: false,
    summary: null,
  }));
  const varying = Object.keys(opts.runs[0]?.varied ?? {});
  const fixed = opts.fixed ?? [];

  let interrupted = false;
  for (let i = 0; i < opts.runs.length; i++) {
    const spec = opts.runs[i];
    const entry = entries[i];
    const dir = join(outDir, RUNS_DIR, spec.name);
    const config: TrainConfig = { ...spec.config, outDir: dir };
    const summaryPath = join(dir, SUMMARY_FILE);
    if (existsSync(summaryPath)) {
      try {
        entry.summary = JSON.parse(readFileSync(summaryPath, 'utf8')) as RunSummary;
        entry.status = 'finished';
        entry.reused = true;
        print(`sweep: run ${i + 1}/${opts.runs.length} ${spec.name}: finished before, skipped`);
        const diff = entry.summary.config ? configDifferences(entry.summary.config, config) : [];
        if (diff.length > 0) warn(`${entry.dir} was trained with ${diff.join(', ')}; delete it to train it again`);
      } catch (e) {
        entry.status = 'failed';
        entry.error = `${summaryPath}: unreadable (${(e as Error).message})`;
        warn(entry.error);
      }
      writeSweepTables(outDir, entries, varying, fixed);
      continue;
    }
    const resume = existsSync(join(dir, CHECKPOINT_FILE)) || existsSync(join(dir, PREVIOUS_CHECKPOINT_FILE));
    // A run that died before its first checkpoint starts again: drop its partial metrics.
    if (!resume) rmSync(join(dir, METRICS_FILE), { force: true });
    print(`sweep: run ${i + 1}/${opts.runs.length} ${spec.name}: ${resume ? 'resuming from its checkpoint' : 'training'} in ${dir}`);
    try {
      const summary = await train(config, {
        resume,
        given: opts.given ?? new Set(),
        distributed: { spawn: true, connectTimeoutS: 60, workerTimeoutS: 5, insecure: false, inProcessWorker: opts.inProcessWorker === true && config.workers > 0 },
        ...(opts.metrics !== undefined ? { metrics: opts.metrics, metricsRun: spec.name } : {}),
      });
      entry.summary = summary;
      entry.status = summary.interrupted ? 'interrupted' : 'finished';
      interrupted = summary.interrupted;
    } catch (e) {
      if (e instanceof UsageError) throw e; // the same for every run
      entry.status = 'failed';
      entry.error = (e as Error).message.split('\n')[0];
      warn(`run ${spec.name} failed: ${entry.error}`);
    }
    writeSweepTables(outDir, entries, varying, fixed);
    if (interrupted) {
      print(`sweep: interrupted; run the same sweep again to continue`);
      break;
    }
  }
  const files = writeSweepTables(outDir, entries, varying, fixed);
  files.push(...writeSweepPlots(outDir, entries));
  const failed = entries.filter((e) => e.status === 'failed').length;
  return { entries, files, interrupted, failed };
}

function pct(v: number | undefined): string {
  return v === undefined || !Number.isFinite(v) ? '' : `${(100 * v).toFixed(2)}%`;
}

function mdCell(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

/** The markdown table of a sweep. */
export function sweepMarkdown(entries: readonly SweepEntry[], varying: readonly string[], fixed: readonly string[] = []): string {
  const lines: string[] = ['# Sweep', ''];
  const valuesOf = (flag: string): string => [...new Set(entries.map((e) => String(e.varied[flag])))].join(', ');
  const what = varying.length > 0 ? `every combination of ${varying.map((f) => `\`--${f}\` ${valuesOf(f)}`).join(' and ')}` : 'a single configuration';
  lines.push(`${entries.length} run${entries.length === 1 ? '' : 's'}, ${what}.${fixed.length > 0 ? ` Same for all: \`${fixed.join(' ')}\`.` : ''}`);
  lines.push('');
  const header = ['run', ...varying.map((f) => `--${f}`), 'test accuracy', 'test loss', 'train time (s)', 'samples/s', 'status'];
  lines.push(`| ${header.join(' | ')} |`);
  lines.push(`|${header.map((_, j) => (j === 0 || j === header.length - 1 ? ' --- ' : ' ---: ')).join('|')}|`);
  for (const e of entries) {
    const s = e.summary;
    const done = e.status === 'finished' && s;
    const status = e.status === 'failed' ? `failed: ${e.error ?? ''}` : e.status === 'finished' && e.reused ? 'finished (earlier)' : e.status;
    const cells = [
      e.status === 'finished' ? `[${e.name}](${encodeURI(`${e.dir}/report.html`)})` : e.name,
      ...varying.map((f) => String(e.varied[f])),
      done ? pct(s.test_accuracy) : '',
      done ? s.test_loss.toFixed(4) : '',
      done ? s.train_seconds.toFixed(1) : '',
      done ? s.train_samples_per_s.toFixed(0) : '',
      status,
    ];
    lines.push(`| ${cells.map(mdCell).join(' | ')} |`);
  }
  const finished = entries.filter((e) => e.status === 'finished' && e.summary);
  if (finished.length > 1) {
    const best = finished.reduce((a, b) => (b.summary!.test_accuracy > a.summary!.test_accuracy ? b : a));
    lines.push('', `Best test accuracy: **${best.name}** (${pct(best.summary!.test_accuracy)}).`);
  }
  lines.push('', `Plots: ![test accuracy](${ACCURACY_BARS}) ![training loss](${LOSS_CURVES}) ![test accuracy per epoch](${TEST_ACCURACY_CURVES})`, '');
  return lines.join('\n');
}

function writeSweepTables(outDir: string, entries: readonly SweepEntry[], varying: readonly string[], fixed: readonly string[]): string[] {
  const json = join(outDir, SWEEP_JSON);
  const md = join(outDir, SWEEP_MD);
  writeFileSync(json, `${JSON.stringify(entries, null, 2)}\n`);
  writeFileSync(md, sweepMarkdown(entries, varying, fixed));
  return [json, md];
}

function readMetrics(runDir: string): { train: TrainRecord[]; test: TestRecord[] } {
  const path = join(runDir, METRICS_FILE);
  if (!existsSync(path)) return { train: [], test: [] };
  const records = parseMetricsJsonl(readFileSync(path, 'utf8'));
  return {
    train: records.filter((r): r is TrainRecord => r.type === 'train' && Number.isFinite(r.loss)),
    test: records.filter((r): r is TestRecord => r.type === 'test'),
  };
}


/** accuracy.png (final test accuracy per run), loss.png and test-accuracy-curves.png (overlaid). */
export function writeSweepPlots(outDir: string, entries: readonly SweepEntry[]): string[] {
  const shown = entries.filter((e) => e.status !== 'pending');
  const color = (e: SweepEntry): string => PALETTE[entries.indexOf(e) % PALETTE.length];
  const width = Math.max(900, Math.min(2400, 110 * shown.length));
  const files: string[] = [];

  const bars = shown.map((e) => ({
    label: e.name,
    value: e.status === 'finished' && e.summary ? 100 * e.summary.test_accuracy : NaN,
    color: color(e),
  }));
  const accuracy = join(outDir, ACCURACY_BARS);
  writeFileSync(accuracy, renderBarChart({
    title: 'Final test accuracy per run',
    yLabel: 'test accuracy (%)',
    bars,
    width,
    valueFormat: (v) => v.toFixed(2),
  }));
  files.push(accuracy);

  const metrics = shown.map((e) => ({ e, ...readMetrics(join(outDir, e.dir)) }));
  const lossSeries: LineSeries[] = [];
  let smoothed = false;
  for (const { e, train } of metrics) {
    const pts = train.map((r) => [r.samples, r.loss] as Point).sort((a, b) => a[0] - b[0]);
    if (pts.length === 0) continue;
    const many = pts.length > 60;
    smoothed ||= many;
    lossSeries.push({ name: e.name, points: many ? ema(pts, pts.length / 40) : pts, color: color(e), lineWidth: 2, markers: !many && pts.length <= 20 });
  }
  const ys = lossSeries.flatMap((s) => s.points.map((p) => p[1])).filter((y) => Number.isFinite(y) && y > 0);
  const loss = join(outDir, LOSS_CURVES);
  writeFileSync(loss, renderLineChart({
    title: `Training loss${smoothed ? ' (smoothed)' : ''}`,
    xLabel: 'training samples seen',
    yLabel: 'cross-entropy loss',
    series: lossSeries,
    width,
    height: 560,
    logY: ys.length > 0 && Math.max(...ys) / Math.min(...ys) > 20,
  }));
  files.push(loss);

  const accSeries: LineSeries[] = metrics
    .map(({ e, test }) => ({
      name: e.name,
      points: test.filter((r) => Number.isFinite(r.test_accuracy)).map((r) => [r.epoch, 100 * r.test_accuracy] as Point).sort((a, b) => a[0] - b[0]),
      color: color(e),
      lineWidth: 2,
      markers: true,
    }))
    .filter((s) => s.points.length > 0);
  const curves = join(outDir, TEST_ACCURACY_CURVES);
  writeFileSync(curves, renderLineChart({
    title: 'Test accuracy after each epoch',
    xLabel: 'epoch',
    yLabel: 'test accuracy (%)',
    series: accSeries,
    width,
    height: 560,
    xIntegerTicks: true,
  }));
  files.push(curves);
  return files;
}
