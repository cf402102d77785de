/**
 * `coordinator evaluate` and `coordinator predict`: a finished run's model on the test set
 * (accuracy, per-class accuracy, confusion matrix) and on pictures of digits.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { IMAGE_PIXELS, NUM_CLASSES, loadMnist } from '../data/mnist.js';
import { confusionMatrix, confusionStats } from '../report/index.js';
import { createEvaluator } from '../training/evaluate.js';
import { UserError } from '../util/errors.js';
import { type MnistSample, ImageFormatError, NoDigitError, decodeImage, toMnistSample } from './digit-image.js';
import { type LoadedRun, forwardImages, loadRun } from './run-model.js';

import { EVALUATION_FILE } from './files.js';
export { EVALUATION_FILE };

export interface ClassResult {
  digit: number;
  /** Test samples of this digit. */
  count: number;
  correct: number;
  /** correct / count (recall); null without samples. */
  accuracy: number | null;
  /** Of the samples predicted as this digit, the share that are it; null when none was. */
  precision: number | null;
}

export interface EvaluationReport {
  run: string;
  model: string;
  weights_sha256: string;
  data: string;
  count: number;
  correct: number;
  accuracy: number;
  loss: number;
  per_class: ClassResult[];
  /** confusion[true][predicted]. */
  confusion: number[][];
  evaluated_at: string;
}

export interface EvaluateOptions {
  run: string;
  /** MNIST directory; default: the one the run trained on. */
  data?: string;
  /** Use only the first N test samples; default: as many as the run used. */
  testLimit?: number;
  /** Write RUN/evaluation.json (default true). */
  write?: boolean;
}

export async function evaluateRun(opts: EvaluateOptions): Promise<{ report: EvaluationReport; run: LoadedRun }> {
  const run = await loadRun(opts.run);
  const dataDir = opts.data ?? run.config.dataDir;
  const data = loadMnist({ dir: dataDir, trainLimit: 1, testLimit: opts.testLimit ?? run.config.testLimit });
  if (data.test.count === 0) throw new UserError(`${data.source}: no test samples`);
  const ev = await createEvaluator(run.model)(run.weights, data.test, run.config.testBatchSize || 1000);
  const matrix = confusionMatrix(ev.predictions, data.test.labels, NUM_CLASSES);
  const stats = confusionStats(matrix);
  const nan = (v: number): number | null => (Number.isFinite(v) ? v : null);
  const report: EvaluationReport = {
    run: run.dir,
    model: run.model.name,
    weights_sha256: run.summary.weights_sha256,
    data: data.source,
    count: ev.count,
    correct: ev.correct,
    accuracy: ev.accuracy,
    loss: ev.loss,
    per_class: matrix.map((row, d) => ({
      digit: d,
      count: stats.rowTotals[d],
      correct: row[d],
      accuracy: nan(stats.recall[d]),
      precision: nan(stats.precision[d]),
    })),
    confusion: matrix,
    evaluated_at: new Date().toISOString(),
  };
  if (opts.write !== false) writeFileSync(join(run.dir, EVALUATION_FILE), `${JSON.stringify(report, null, 2)}\n`);
  return { report, run };
}

const pct = (v: number | null): string => (v === null ? 'n/a' : `${(100 * v).toFixed(2)}%`);

/** The evaluation as the terminal shows it: totals, a per-class table and the confusion matrix. */
export function formatEvaluation(r: EvaluationReport): string {
  const lines: string[] = [];
  lines.push(`Run: ${r.run} (model ${r.model})`);
  lines.push(`Data: ${r.count} test samples from ${r.data}`);
  lines.push(`Accuracy: ${r.correct}/${r.count} (${pct(r.accuracy)}), average loss ${r.loss.toFixed(4)}`);
  lines.push('');
  lines.push('Per class:');
  const header = ['digit', 'samples', 'correct', 'accuracy', 'precision'];
  const rows = r.per_class.map((c) => [String(c.digit), String(c.count), String(c.correct), pct(c.accuracy), pct(c.precision)]);
  lines.push(...alignTable([header, ...rows]));
  lines.push('');
  lines.push('Confusion matrix (rows: true digit, columns: predicted digit):');
  const cm: string[][] = [['true\\pred', ...r.confusion.map((_, j) => String(j)), 'total']];
  r.confusion.forEach((row, i) => cm.push([String(i), ...row.map(String), String(row.reduce((a, b) => a + b, 0))]));
  const colTotals = r.confusion[0].map((_, j) => r.confusion.reduce((a, row) => a + row[j], 0));
  cm.push(['total', ...colTotals.map(String), String(r.count)]);
  lines.push(...alignTable(cm));
  return lines.join('\n');
}

/** Right-aligned columns separated by two spaces. */
function alignTable(rows: string[][]): string[] {
  const widths = rows[0].map((_, j) => Math.max(...rows.map((r) => r[j].length)));
  return rows.map((r) => r.map((cell, j) => cell.padStart(widths[j])).join('  '));
}

export interface Prediction {
  file: string;
  digit: number;
  probabilities: number[];
  /** The picture was dark on light and was inverted. */
  inverted: boolean;
  /** The 28×28 MNIST-style sample the model saw. */
  sample: Uint8Array;
}

/** Reads, decodes and preprocesses each picture; errors name the file. */
export function readDigitImages(files: readonly string[]): MnistSample[] {
  return files.map((file) => {
    let bytes: Buffer;
    try {
      bytes = readFileSync(file);
    } catch (e) {
      throw new UserError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    try {
      return toMnistSample(decodeImage(bytes));
    } catch (e) {
      if (e instanceof ImageFormatError || e instanceof NoDigitError) throw new UserError(`${file}: ${e.message}`);
      throw e;
    }
  });
}

export async function predictImages(runDir: string, files: readonly string[]): Promise<{ predictions: Prediction[]; run: LoadedRun }> {
  if (files.length === 0) throw new UserError('predict needs at least one IMAGE');
  const samples = readDigitImages(files);
  const run = await loadRun(runDir);
  const pixels = new Uint8Array(samples.length * IMAGE_PIXELS);
  samples.forEach((s, i) => pixels.set(s.pixels, i * IMAGE_PIXELS));
  const out = await forwardImages(run.model, run.weights, pixels);
  const predictions = samples.map((s, i) => ({
    file: files[i],
    digit: out.predictions[i],
    probabilities: [...out.probabilities.subarray(i * NUM_CLASSES, (i + 1) * NUM_CLASSES)],
    inverted: s.inverted,
    sample: s.pixels,
  }));
  return { predictions, run };
}

/** One line per file: the digit and the ten probabilities, under a header. */
export function formatPredictions(predictions: readonly Prediction[]): string {
  const header = ['file', 'digit', ...Array.from({ length: NUM_CLASSES }, (_, d) => `p(${d})`)];
  const rows = predictions.map((p) => [p.file, String(p.digit), ...p.probabilities.map((v) => v.toFixed(4))]);
  const all = [header, ...rows];
  const widths = header.map((_, j) => Math.max(...all.map((r) => r[j].length)));
  return all.map((r) => r.map((cell, j) => (j === 0 ? cell.padEnd(widths[j]) : cell.padStart(widths[j]))).join('  ')).join('\n');
}
