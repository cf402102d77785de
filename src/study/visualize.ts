/**
 * `coordinator visualize`: what each convolution layer of a finished run's model outputs (after
 * pool and relu) for the first N test images, one picture per image and an overview.
 */
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { IMAGE_PIXELS, IMAGE_SIZE, NUM_CLASSES, loadMnist } from '../data/mnist.js';
import {
  type FeatureMapExample, type ImageCell, type ImageRow, channelsToCells, renderImageGrid,
} from '../report/index.js';
import { UserError } from '../util/errors.js';
import { forwardImages, loadRun } from './run-model.js';
import { makeDirs } from '../util/fs.js';

export const OVERVIEW_FILE = 'feature-maps.png';
export const sampleFile = (i: number): string => `sample-${i}.png`;

/**
 * The outputs are relu'd (≥ 0): each channel is drawn from 0 (black) to its own maximum (white),
 * so that a channel that is positive everywhere shows as grey rather than as a full-range picture.
 */
function fromZero(cell: ImageCell): ImageCell {
  let max = 0;
  for (let i = 0; i < cell.width * cell.height; i++) max = Math.max(max, cell.pixels[i]);
  return { ...cell, range: [0, max > 0 ? max : 1] };
}

/** An empty place in a grid (one white pixel on the white page). */
const SPACER: ImageCell = { pixels: [0], width: 1, height: 1, range: [-1, 0], scale: 1 };

export interface VisualizeOptions {
  run: string;
  samples: number;
  out: string;
  /** MNIST directory; default: the one the run trained on. */
  data?: string;
}

export interface VisualizeResult {
  files: string[];
  warnings: string[];
  /** Per sample: its label and the model's prediction. */
  samples: Array<{ index: number; label: number; prediction: number; probability: number }>;
  /** Per feature map: [h, w, channels]. */
  layers: Array<{ name: string; height: number; width: number; channels: number }>;
}

export async function visualizeRun(opts: VisualizeOptions): Promise<VisualizeResult> {
  if (!Number.isInteger(opts.samples) || opts.samples < 1) throw new UserError('--samples must be a positive integer');
  const run = await loadRun(opts.run);
  const data = loadMnist({ dir: opts.data ?? run.config.dataDir, trainLimit: 1, testLimit: opts.samples });
  const n = data.test.count;
  if (n < opts.samples) throw new UserError(`--samples ${opts.samples}: the test set has only ${n} images`);
  const out = await forwardImages(run.model, run.weights, data.test.images.subarray(0, n * IMAGE_PIXELS), { featureMaps: true });
  const layers = run.model.featureMaps.map((name) => {
    const fm = out.featureMaps.get(name);
    if (!fm) throw new Error(`model ${run.model.name} did not report feature map ${name}`);
    const [, height, width, channels] = fm.shape;
    return { name, height, width, channels, data: fm.data };
  });

  const outDir = resolve(opts.out);
  try {
    makeDirs(outDir);
  } catch (e) {
    throw new UserError(`--out ${opts.out}: cannot write there (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const runName = run.dir.split('/').filter(Boolean).pop() ?? run.dir;
  const files: string[] = [];
  const samples: VisualizeResult['samples'] = [];
  const examples: FeatureMapExample[] = [];
  for (let i = 0; i < n; i++) {
    const label = data.test.labels[i];
    const prediction = out.predictions[i];
    const probability = out.probabilities[i * NUM_CLASSES + prediction];
    samples.push({ index: i, label, prediction, probability });
    const input: ImageCell = {
      pixels: data.test.images.subarray(i * IMAGE_PIXELS, (i + 1) * IMAGE_PIXELS),
      width: IMAGE_SIZE,
      height: IMAGE_SIZE,
      range: [0, 255],
    };
    const sampleLayers = layers.map((l) => {
      const size = l.height * l.width * l.channels;
      return { name: l.name, height: l.height, width: l.width, channels: l.channels, data: l.data.subarray(i * size, (i + 1) * size) };
    });

    // One picture per sample: the input, then one row (wrapped) per conv layer.
    const maxChannels = Math.max(...layers.map((l) => l.channels));
    const columns = Math.min(16, Math.max(layers[0]?.channels ?? 1, Math.ceil(maxChannels / 2)));
    const rows: ImageRow[] = [
      { label: `input\nlabel ${label}`, cells: [{ ...input, caption: `test image #${i}` }] },
      ...sampleLayers.map((l) => ({
        label: `${l.name}\n${l.channels}×${l.height}×${l.width}`,
        cells: channelsToCells(l.data, l.height, l.width, l.channels, 'hwc', '#').map(fromZero),
      })),
    ];
    const path = join(outDir, sampleFile(i));
    writeFileSync(path, renderImageGrid({
      title: `${runName} (${run.model.name}): test image #${i}, label ${label}, predicted ${prediction} (${(100 * probability).toFixed(1)}%)`,
      rows,
      cellSize: 84,
      maxColumns: columns,
    }));
    files.push(path);
    examples.push({ label: `#${i}\nlabel ${label}\npred ${prediction}`, input, layers: sampleLayers });
  }

  // The overview: per sample, the input followed by the first layer's channels, then each further
  // layer on lines of its own, its channels aligned in columns under the first layer's.
  const width = Math.min(32, Math.max(...layers.map((l) => l.channels)));
  const overview = join(outDir, OVERVIEW_FILE);
  const overviewRows: ImageRow[] = examples.map((ex) => {
    const cells: ImageCell[] = [{ ...ex.input, caption: 'input' }];
    ex.layers.forEach((l, k) => {
      const maps = channelsToCells(l.data, l.height, l.width, l.channels, 'hwc', `${l.name} #`).map(fromZero);
      for (let c = 0; c < maps.length; c++) {
        if (c % width === 0 && (k > 0 || c > 0)) {
          while (cells.length % (width + 1) !== 0) cells.push(SPACER); // finish the line
          cells.push(SPACER); // under the input
        }
        cells.push(maps[c]);
      }
    });
    return { label: ex.label, cells };
  });
  writeFileSync(overview, renderImageGrid({
    title: `${runName} (${run.model.name}): conv layer outputs after pool and relu (${layers.map((l) => `${l.name} ${l.channels}×${l.height}×${l.width}`).join(', ')})`,
    rows: overviewRows,
    cellSize: 56,
    maxColumns: width + 1,
    gap: 4,
    captionFontSize: 10,
  }));
  files.push(overview);
  return {
    files,
    warnings: run.warnings,
    samples,
    layers: layers.map(({ name, height, width, channels }) => ({ name, height, width, channels })),
  };
}
