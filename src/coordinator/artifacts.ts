/** What a finished run leaves besides summary.json and the model: plots and report.html. */
import type { TrainConfig } from '../config.js';
import type { MnistData } from '../data/mnist.js';
import type { Evaluation } from '../training/evaluate.js';
import type { RunSummary } from '../training/loop.js';

export interface RunArtifactsInput {
  config: TrainConfig;
  summary: RunSummary;
  evaluation: Evaluation;
  data: MnistData;
}

export async function writeRunArtifacts(_outDir: string, _input: RunArtifactsInput): Promise<void> {
  // Plots and the HTML report are wired in once src/report lands.
}
