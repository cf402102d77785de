/** `coordinator visualize`: the conv layers' outputs of a finished run, as PNG pictures. */
import { Command, Option } from 'commander';
import { positiveInt } from './flags.js';

export function registerVisualizeCommand(program: Command): Command {
  return program
    .command('visualize')
    .description('PNG pictures of what each convolution layer outputs (after pool and relu) for the first N test images: sample-<i>.png per image and feature-maps.png')
    .requiredOption('--run <dir>', 'a finished run (its --out folder)')
    .addOption(new Option('--samples <n>', 'how many test images, from the first').argParser(positiveInt).default(5))
    .requiredOption('--out <dir>', 'where to write the pictures')
    .option('--data <dir>', "read MNIST from DIR (default: the run's data)")
    .action(async (flags: { run: string; samples: number; out: string; data?: string }) => {
      const { visualizeRun } = await import('../study/visualize.js');
      const result = await visualizeRun(flags);
      for (const w of result.warnings) process.stderr.write(`visualize: warning: ${w}\n`);
      process.stdout.write(`layers: ${result.layers.map((l) => `${l.name} ${l.channels}×${l.height}×${l.width}`).join(', ')}\n`);
      for (const s of result.samples) {
        process.stdout.write(`test image #${s.index}: label ${s.label}, predicted ${s.prediction} (${(100 * s.probability).toFixed(1)}%)\n`);
      }
      process.stdout.write(`wrote ${result.files.join(', ')}\n`);
    });
}
