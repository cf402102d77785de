/**
 * A finished run's model, as the study's tools (visualize, evaluate, predict) need it: the model
 * definition named in summary.json and its final weights, from the checkpoint (or, where the
 * checkpoint is gone, from the exported layers model), plus a forward pass in evaluation mode.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { TrainConfig } from '../config.js';
import { IMAGE_PIXELS, IMAGE_SIZE, NUM_CLASSES, normalisePixels } from '../data/mnist.js';
import { initEngine } from '../engine/backend.js';
import { type ModelDef, createModel, isModelName, paramLayout } from '../models/index.js';
import { forwardLayers } from '../models/ops.js';
import { CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE, loadLatestCheckpoint } from '../training/checkpoint.js';
import { MODEL_DIR, fileSystemLoader } from '../training/export.js';
import { asParams, paramTensors } from '../training/gradients.js';
import { type RunSummary, SUMMARY_FILE, weightsSha256 } from '../training/loop.js';
import { UserError } from '../util/errors.js';

export interface LoadedRun {
  /** Absolute path of the run folder. */
  dir: string;
  summary: RunSummary;
  config: TrainConfig;
  model: ModelDef;
  weights: Float32Array;
  /** Where the weights came from (a file path). */
  weightsFrom: string;
  /** Things the user should know (e.g. weights that differ from the summary's). */
  warnings: string[];
}

/** The reason `dir` holds no finished run, or undefined when it does. */
export function unfinishedRunProblem(dir: string, flag = '--run'): string | undefined {
  if (!existsSync(dir)) return `${flag} ${dir}: no such directory`;
  if (!statSync(dir).isDirectory()) return `${flag} ${dir}: not a directory`;
  if (existsSync(join(dir, SUMMARY_FILE))) return undefined;
  if (existsSync(join(dir, CHECKPOINT_FILE)) || existsSync(join(dir, PREVIOUS_CHECKPOINT_FILE))) {
    return `${flag} ${dir}: the run has not finished (no ${SUMMARY_FILE}); finish it with: coordinator --resume --out ${dir}`;
  }
  return `${flag} ${dir}: not a training run (no ${SUMMARY_FILE})`;
}

function readSummary(dir: string): RunSummary {
  const path = join(dir, SUMMARY_FILE);
  let summary: RunSummary;
  try {
    summary = JSON.parse(readFileSync(path, 'utf8')) as RunSummary;
  } catch (e) {
    throw new UserError(`${path}: unreadable (${(e as Error).message.split('\n')[0]})`);
  }
  if (!summary || typeof summary !== 'object' || typeof summary.model !== 'string' || !summary.config) {
    throw new UserError(`${path}: not a run summary (no model or config)`);
  }
  return summary;
}

/** The layers model's weights, flattened in canonical order (the layers' weight order). */
async function weightsFromLayersModel(model: ModelDef, modelJson: string): Promise<Float32Array> {
  const layersModel = await tfl.loadLayersModel(fileSystemLoader(modelJson));
  try {
    const tensors = layersModel.getWeights();
    const layout = paramLayout(model);
    if (tensors.length !== layout.specs.length) throw new UserError(`${modelJson}: ${tensors.length} weight tensors, model ${model.name} has ${layout.specs.length}`);
    const weights = new Float32Array(layout.total);
    for (let i = 0; i < tensors.length; i++) weights.set((await tensors[i].data()) as Float32Array, layout.offsets[i]);
    return weights;
  } finally {
    layersModel.dispose();
  }
}

/**
 * Loads a finished run: summary.json, the model it names and the final weights. Starts the
 * tensor engine (once per process). Errors name the run and say what is missing.
 */
export async function loadRun(runDir: string, flag = '--run'): Promise<LoadedRun> {
  const problem = unfinishedRunProblem(runDir, flag);
  if (problem) throw new UserError(problem);
  const dir = resolve(runDir);
  const summary = readSummary(dir);
  if (!isModelName(summary.model)) throw new UserError(`${join(dir, SUMMARY_FILE)}: unknown model ${summary.model}`);
  let model: ModelDef;
  try {
    model = createModel(summary.model);
  } catch (e) {
    throw new UserError(`${runDir}: ${(e as Error).message}`);
  }
  await initEngine({ noCuda: summary.config.noCuda, engine: summary.config.engine });
  const warnings: string[] = [];

  let weights: Float32Array;
  let weightsFrom: string;
  const loaded = loadLatestCheckpoint(dir);
  for (const s of loaded?.skipped ?? []) warnings.push(`skipped a checkpoint: ${s}`);
  const modelJson = join(dir, MODEL_DIR, 'model.json');
  if (loaded) {
    weights = loaded.state.weights;
    weightsFrom = loaded.file;
  } else if (existsSync(modelJson)) {
    weights = await weightsFromLayersModel(model, modelJson);
    weightsFrom = modelJson;
  } else {
    throw new UserError(`${flag} ${runDir}: no weights (neither ${CHECKPOINT_FILE} nor ${MODEL_DIR}/model.json)`);
  }
  const total = paramLayout(model).total;
  if (weights.length !== total) throw new UserError(`${weightsFrom}: ${weights.length} weights, model ${model.name} has ${total}`);
  if (summary.weights_sha256 && weightsSha256(weights) !== summary.weights_sha256) {
    warnings.push(`the weights in ${weightsFrom} differ from those summary.json describes (weights_sha256); using them anyway`);
  }
  return { dir, summary, config: summary.config, model, weights, weightsFrom, warnings };
}

export interface ForwardResult {
  /** [n × 10] class probabilities. */
  probabilities: Float32Array;
  /** Predicted class per image. */
  predictions: Uint8Array;
  /** Per feature map name: the activations [n, h, w, c] and their shape. */
  featureMaps: Map<string, { data: Float32Array; shape: number[] }>;
}

/**
 * Runs the model in evaluation mode (no dropout) on `pixels` ([n × 28 × 28] uint8), optionally
 * capturing every conv layer's output (after pool and relu) through the model's `tap`.
 */
export async function forwardImages(model: ModelDef, weights: Float32Array, pixels: Uint8Array, opts: { featureMaps?: boolean; batchSize?: number } = {}): Promise<ForwardResult> {
  const n = pixels.length / IMAGE_PIXELS;
  if (!Number.isInteger(n)) throw new RangeError(`${pixels.length} pixels is not a whole number of ${IMAGE_SIZE}×${IMAGE_SIZE} images`);
  const probabilities = new Float32Array(n * NUM_CLASSES);
  const predictions = new Uint8Array(n);
  const featureMaps = new Map<string, { data: Float32Array; shape: number[] }>();
  const batch = opts.batchSize ?? 1000;
  const params = paramTensors(model, weights);
  try {
    const p = asParams(model, params);
    for (let start = 0; start < n; start += batch) {
      const end = Math.min(n, start + batch);
      const m = end - start;
      const x = normalisePixels(pixels.subarray(start * IMAGE_PIXELS, end * IMAGE_PIXELS));
      // The outputs leave tidy() alive and are read back asynchronously (a GPU engine has no
      // synchronous read), then freed.
      const taps: { name: string; t: tf.Tensor }[] = [];
      const [probs, preds] = tf.tidy(() => {
        const tap = opts.featureMaps ? (name: string, a: tf.Tensor): void => void taps.push({ name, t: tf.keep(a) }) : undefined;
        const logp = forwardLayers(model.layers, p, tf.tensor4d(x, [m, IMAGE_SIZE, IMAGE_SIZE, 1]), { tap });
        return [tf.exp(logp), tf.argMax(logp, 1)];
      });
      try {
        probabilities.set((await probs.data()) as Float32Array, start * NUM_CLASSES);
        predictions.set((await preds.data()) as Int32Array, start);
        for (const { name, t } of taps) {
          const [, h, w, c] = t.shape;
          let entry = featureMaps.get(name);
          if (!entry) {
            entry = { data: new Float32Array(n * h * w * c), shape: [n, h, w, c] };
            featureMaps.set(name, entry);
          }
          entry.data.set((await t.data()) as Float32Array, start * h * w * c);
        }
      } finally {
        tf.dispose([probs, preds, ...taps.map((e) => e.t)]);
      }
    }
  } finally {
    params.forEach((t) => t.dispose());
  }
  return { probabilities, predictions, featureMaps };
}
