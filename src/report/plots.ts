/** Per-run plots (loss, accuracy) from the trainer's metric records. */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { renderLineChart } from './chart.js';
import { PALETTE } from './draw.js';
import type { LineChartSpec, LineSeries, MetricRecord, Point, TestRecord, TrainRecord } from './types.js';

export type { MetricRecord, TrainRecord, TestRecord } from './types.js';

/** File names written by `writeRunPlots`. */
export const LOSS_PLOT = 'loss.png';
export const ACCURACY_PLOT = 'accuracy.png';

function isTrain(r: MetricRecord): r is TrainRecord {
  return r.type === 'train';
}
function isTest(r: MetricRecord): r is TestRecord {
  return r.type === 'test';
}

/**
 * Parses JSON-lines metrics (one record per line). Blank lines, malformed
 * lines and records of other types are skipped.
 */
export function parseMetricsJsonl(text: string): MetricRecord[] {
  const out: MetricRecord[] = [];
  for (const line of text.split(/\r?\n/)) {
    const t = line.trim();
    if (t === '') continue;
    try {
      const r = JSON.parse(t) as unknown;
      if (r && typeof r === 'object' && ((r as { type?: unknown }).type === 'train' || (r as { type?: unknown }).type === 'test')) {
        out.push(r as MetricRecord);
      }
    } catch {
      // ignore malformed line (e.g. a partially written last line)
    }
  }
  return out;
}

/** Bias-corrected exponential moving average over the y values. */
export function ema(points: readonly Point[], halfLife: number): Point[] {
  const beta = Math.pow(0.5, 1 / Math.max(1, halfLife));
  let m = 0;
  let w = 0;
  return points.map(([x, y]) => {
    m = beta * m + (1 - beta) * y;
    w = beta * w + (1 - beta);
    return [x, m / w] as Point;
  });
}

function finite(...v: (number | undefined)[]): boolean {
  return v.every((x) => typeof x === 'number' && Number.isFinite(x));
}

/**
 * Builds the chart specs of a run (pure; `writeRunPlots` renders them).
 * `loss`: training loss vs samples seen (raw + smoothed when there are many
 * points) and test loss at the evaluation points; falls back to epochs on the
 * x axis when no sample counts are known. `accuracy`: test accuracy (in %)
 * per epoch. A spec is undefined when there is nothing to plot.
 */
export function runPlotSpecs(metrics: readonly MetricRecord[], title?: string): { loss?: LineChartSpec; accuracy?: LineChartSpec } {
  const train = metrics.filter(isTrain).filter((r) => finite(r.loss));
  const test = metrics.filter(isTest);
  const prefix = title ? `${title}: ` : '';
  const out: { loss?: LineChartSpec; accuracy?: LineChartSpec } = {};

  // ---- loss
  const bySamples = train.length > 0 && train.every((r) => finite(r.samples));
  const trainPts: Point[] = train
    .map((r) => [bySamples ? r.samples : r.epoch, r.loss] as Point)
    .sort((a, b) => a[0] - b[0]);
  const testX = (r: TestRecord): number => {
    if (!bySamples) return r.epoch;
    if (finite(r.samples)) return r.samples!;
    let best = NaN;
    for (const t of train) if (t.step <= r.step && !(t.samples <= best)) best = t.samples;
    if (Number.isNaN(best)) for (const t of train) if (t.epoch === r.epoch && !(t.samples <= best)) best = t.samples;
    return best;
  };
  const testLoss: Point[] = test
    .filter((r) => finite(r.test_loss))
    .map((r) => [testX(r), r.test_loss] as Point)
    .filter(([x]) => Number.isFinite(x))
    .sort((a, b) => a[0] - b[0]);
  const series: LineSeries[] = [];
  if (trainPts.length > 60) {
    series.push({ name: 'train loss', points: trainPts, color: PALETTE[0]!, alpha: 0.3, lineWidth: 1, markers: false });
    series.push({ name: 'train loss (smoothed)', points: ema(trainPts, trainPts.length / 40), color: PALETTE[0]!, lineWidth: 2, markers: false });
  } else if (trainPts.length > 0) {
    series.push({ name: 'train loss', points: trainPts, color: PALETTE[0]! });
  }
  if (testLoss.length > 0) series.push({ name: 'test loss', points: testLoss, color: PALETTE[1]!, lineWidth: 2.5, markers: true });
  if (series.length > 0) {
    const ys = series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
    const lo = Math.min(...ys);
    const hi = Math.max(...ys);
    out.loss = {
      title: `${prefix}Loss`,
      xLabel: bySamples ? 'training samples seen' : 'epoch',
      yLabel: 'cross-entropy loss',
      series,
      logY: lo > 0 && hi / lo > 20,
      xIntegerTicks: !bySamples,
    };
  }

  // ---- accuracy
  const acc = test.filter((r) => finite(r.test_accuracy, r.epoch));
  if (acc.length > 0) {
    const asPct = acc.every((r) => r.test_accuracy <= 1);
    const pts = acc.map((r) => [r.epoch, asPct ? r.test_accuracy * 100 : r.test_accuracy] as Point).sort((a, b) => a[0] - b[0]);
    const accSeries: LineSeries[] = [{ name: 'test accuracy', points: pts, color: PALETTE[2]!, lineWidth: 2.5, markers: true }];
    const last = pts[pts.length - 1]!;
    const best = pts.reduce((m, p) => (p[1] > m ? p[1] : m), -Infinity);
    const unit = asPct ? '%' : '';
    out.accuracy = {
      title: `${prefix}Test accuracy (final ${last[1].toFixed(2)}${unit}, best ${best.toFixed(2)}${unit})`,
      xLabel: 'epoch',
      yLabel: asPct ? 'accuracy (%)' : 'accuracy',
      series: accSeries,
      xIntegerTicks: true,
    };
  }
  return out;
}

/**
 * Writes `loss.png` and `accuracy.png` into `outDir` (created if needed)
 * from a run's metric records and returns the names of the files written
 * (a plot with no data is not written).
 */
export async function writeRunPlots(outDir: string, metrics: readonly MetricRecord[], title?: string): Promise<string[]> {
  const specs = runPlotSpecs(metrics, title);
  await mkdir(outDir, { recursive: true });
  const written: string[] = [];
  if (specs.loss) {
    await writeFile(join(outDir, LOSS_PLOT), renderLineChart(specs.loss));
    written.push(LOSS_PLOT);
  }
  if (specs.accuracy) {
    await writeFile(join(outDir, ACCURACY_PLOT), renderLineChart(specs.accuracy));
    written.push(ACCURACY_PLOT);
  }
  return written;
}
