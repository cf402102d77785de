/** `coordinator evaluate` and `coordinator predict`: a finished run's model on the test set and on pictures. */
import { Command, Option } from 'commander';
import { writeFileSync } from 'node:fs';
import { basename, extname, join } from 'node:path';
import { IMAGE_SIZE } from '../data/mnist.js';
import { EVALUATION_FILE } from '../study/files.js';
import { UserError } from '../util/errors.js';
import { positiveInt } from './flags.js';
import { makeDirs } from '../util/fs.js';

export function registerEvaluateCommand(program: Command): Command {
  return program
    .command('evaluate')
    .description(`a finished run's model on the test set: accuracy, per-class accuracy and the confusion matrix (also written to RUN/${EVALUATION_FILE})`)
    .requiredOption('--run <dir>', 'a finished run (its --out folder)')
    .option('--data <dir>', "read MNIST from DIR (default: the run's data)")
    .addOption(new Option('--test-limit <n>', 'use only the first N test samples (default: as many as the run used)').argParser(positiveInt))
    .option('--json', `print the evaluation as JSON (what ${EVALUATION_FILE} holds)`, false)
    .action(async (flags: { run: string; data?: string; testLimit?: number; json: boolean }) => {
      const { evaluateRun, formatEvaluation } = await import('../study/evaluate.js');
      const { report, run } = await evaluateRun(flags);
      for (const w of run.warnings) process.stderr.write(`evaluate: warning: ${w}\n`);
      process.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatEvaluation(report)}\n\nwrote ${join(run.dir, EVALUATION_FILE)}\n`);
    });
}

export function registerPredictCommand(program: Command): Command {
  return program
    .command('predict')
    .description('the digit in each picture (PNG or JPEG), prepared as MNIST was: grayscale, inverted when dark on light, cropped, scaled into 20×20, centred by centre of mass in 28×28')
    .requiredOption('--run <dir>', 'a finished run (its --out folder)')
    .argument('<image...>', 'PNG or JPEG files, one digit each')
    .option('--json', 'print the predictions as JSON', false)
    .option('--save-inputs <dir>', 'also write the 28×28 images the model saw, as PNG')
    .action(async (images: string[], flags: { run: string; json: boolean; saveInputs?: string }) => {
      const { formatPredictions, predictImages } = await import('../study/evaluate.js');
      const { predictions, run } = await predictImages(flags.run, images);
      for (const w of run.warnings) process.stderr.write(`predict: warning: ${w}\n`);
      if (flags.saveInputs) {
        try {
          makeDirs(flags.saveInputs);
        } catch (e) {
          throw new UserError(`--save-inputs ${flags.saveInputs}: cannot write there (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
        }
        const { PNG } = (await import('pngjs')).default;
        predictions.forEach((p, i) => {
          const png = new PNG({ width: IMAGE_SIZE, height: IMAGE_SIZE, colorType: 0, inputColorType: 0, inputHasAlpha: false });
          png.data = Buffer.from(p.sample);
          writeFileSync(join(flags.saveInputs!, `${i}-${basename(p.file, extname(p.file))}.png`), PNG.sync.write(png, { colorType: 0, inputColorType: 0, inputHasAlpha: false }));
        });
      }
      if (flags.json) {
        const out = predictions.map((p) => ({ file: p.file, digit: p.digit, probabilities: p.probabilities, inverted: p.inverted }));
        process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
      } else {
        process.stdout.write(`${formatPredictions(predictions)}\n`);
      }
    });
}
