/**
 * The final model in TensorFlow.js layers format: `model/model.json` + `model/weights.bin`, which
 * `tf.loadLayersModel` opens (with tfjs-node: `file://RUN/model/model.json`; anywhere else through
 * the `fileSystemLoader` below or an HTTP server).
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { paramLayout, paramSize } from '../models/index.js';
import type { ModelDef } from '../models/types.js';
import { makeDirs } from '../util/fs.js';

export const MODEL_DIR = 'model';
const WEIGHTS_FILE = 'weights.bin';

/** The layers model with the trained weights (canonical order = the layers' weight order). */
export function toLayersModel(model: ModelDef, weights: Float32Array): tfl.Sequential {
  const layersModel = model.buildLayersModel();
  const layout = paramLayout(model);
  const tensors = layout.specs.map((spec, i) =>
    tf.tensor(weights.subarray(layout.offsets[i], layout.offsets[i] + paramSize(spec)), spec.shape),
  );
  layersModel.setWeights(tensors);
  tensors.forEach((t) => t.dispose());
  return layersModel;
}

export async function exportLayersModel(model: ModelDef, weights: Float32Array, outDir: string): Promise<string> {
  const dir = join(outDir, MODEL_DIR);
  makeDirs(dir);
  const layersModel = toLayersModel(model, weights);
  await layersModel.save(
    tf.io.withSaveHandler(async (artifacts) => {
      const weightData = tf.io.CompositeArrayBuffer.join(artifacts.weightData as ArrayBuffer);
      writeFileSync(join(dir, WEIGHTS_FILE), Buffer.from(weightData));
      const modelJson = {
        modelTopology: artifacts.modelTopology,
        format: 'layers-model',
        generatedBy: artifacts.generatedBy,
        convertedBy: null,
        weightsManifest: [{ paths: [`./${WEIGHTS_FILE}`], weights: artifacts.weightSpecs }],
      };
      writeFileSync(join(dir, 'model.json'), JSON.stringify(modelJson));
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    }),
  );
  layersModel.dispose();
  return join(dir, 'model.json');
}

/** An IOHandler that reads `model.json` and its weight files from disk, for tf.loadLayersModel. */
export function fileSystemLoader(modelJsonPath: string): tf.io.IOHandler {
  return {
    async load() {
      const modelJson = JSON.parse(readFileSync(modelJsonPath, 'utf8')) as tf.io.ModelJSON;
      const base = dirname(modelJsonPath);
      const weightSpecs: tf.io.WeightsManifestEntry[] = [];
      const buffers: Buffer[] = [];
      for (const group of modelJson.weightsManifest) {
        weightSpecs.push(...group.weights);
        for (const path of group.paths) buffers.push(readFileSync(join(base, path)));
      }
      const joined = Buffer.concat(buffers);
      return {
        modelTopology: modelJson.modelTopology,
        weightSpecs,
        weightData: joined.buffer.slice(joined.byteOffset, joined.byteOffset + joined.byteLength),
        format: modelJson.format,
        generatedBy: modelJson.generatedBy,
        convertedBy: modelJson.convertedBy,
      };
    },
  };
}
