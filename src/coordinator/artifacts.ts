/**
 * What a finished run leaves besides summary.json and the model: loss and accuracy plots, the
 * confusion matrix, a grid of misclassified test images, and report.html showing them all.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TrainConfig } from '../config.js';
import { IMAGE_PIXELS, IMAGE_SIZE, type MnistData } from '../data/mnist.js';
import {
  confusionMatrix,
  misclassifiedGridSpec,
  parseMetricsJsonl,
  renderConfusionMatrix,
  renderImageGrid,
  writeRunPlots,
  writeRunReport,
} from '../report/index.js';
import type { Evaluation } from '../training/evaluate.js';
import { METRICS_FILE, type RunSummary } from '../training/loop.js';

export const CONFUSION_PLOT = 'confusion.png';
export const MISCLASSIFIED_PLOT = 'misclassified.png';
/** How many misclassified test images the report shows. */
const MISCLASSIFIED_SHOWN = 40;

export interface RunArtifactsInput {
  config: TrainConfig;
  summary: RunSummary;
  evaluation: Evaluation;
  data: MnistData;
}

export async function writeRunArtifacts(outDir: string, { config, summary, evaluation, data }: RunArtifactsInput): Promise<void> {
  const metrics = parseMetricsJsonl(readFileSync(join(outDir, METRICS_FILE), 'utf8'));
  const how = summary.workers === 0 ? 'single node' : `${summary.workers} workers`;
  const title = `${config.model}, ${how}${config.deterministic ? ', deterministic' : ''}`;
  const plots = await writeRunPlots(outDir, metrics, title);

  const matrix = confusionMatrix(evaluation.predictions, data.test.labels);
  writeFileSync(join(outDir, CONFUSION_PLOT), renderConfusionMatrix(matrix, { title: 'Confusion matrix (test set)' }));

  const wrong: Array<{ pixels: Uint8Array; width: number; height: number; pred: number; truth: number }> = [];
  for (let i = 0; i < data.test.count && wrong.length < MISCLASSIFIED_SHOWN; i++) {
    if (evaluation.predictions[i] !== data.test.labels[i]) {
      wrong.push({
        pixels: data.test.images.subarray(i * IMAGE_PIXELS, (i + 1) * IMAGE_PIXELS),
        width: IMAGE_SIZE,
        height: IMAGE_SIZE,
        pred: evaluation.predictions[i],
        truth: data.test.labels[i],
      });
    }
  }
  if (wrong.length > 0) {
    writeFileSync(join(outDir, MISCLASSIFIED_PLOT), renderImageGrid(misclassifiedGridSpec(wrong, 10, { range: [0, 255], title: `First ${wrong.length} misclassified test images` })));
  }

  const { config: _config, ...summaryFields } = summary;
  await writeRunReport(outDir, {
    title: `MNIST training run: ${title}`,
    subtitle: outDir,
    config: config as unknown as Record<string, unknown>,
    summary: summaryFields as unknown as Record<string, unknown>,
    plots,
    confusion: matrix,
    confusionImage: CONFUSION_PLOT,
    ...(wrong.length > 0 ? { misclassifiedImage: MISCLASSIFIED_PLOT } : {}),
  });
}
