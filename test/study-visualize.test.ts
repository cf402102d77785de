import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import pngjs from 'pngjs';
import { COORDINATOR, runCli, tempDir } from './helpers.js';

const { PNG } = pngjs;
const TINY = ['--workers', '0', '--epochs', '1', '--train-limit', '320', '--test-limit', '100', '--lr', '0.05'];

function decode(path: string): { width: number; height: number; data: Buffer } {
  return PNG.sync.read(readFileSync(path));
}

/** Distinct gray levels in a picture: a readable picture of feature maps has many. */
function grayLevels(img: { data: Buffer }): number {
  const levels = new Set<number>();
  for (let i = 0; i < img.data.length; i += 4) levels.add(img.data[i]);
  return levels.size;
}

function oneLine(stderr: string, pattern: RegExp): void {
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, stderr);
  assert.match(lines[0], pattern);
}

test('visualize: a picture per test image with every channel of every conv layer, and an overview', async () => {
  const root = tempDir('mnist-visualize-');
  const nets: Array<[string, string]> = [['net', 'conv1 10×12×12, conv2 20×4×4'], ['lenet', 'conv1 6×14×14, conv2 16×5×5']];
  for (const [model, layers] of nets) {
    const run = join(root, model);
    let r = await runCli(COORDINATOR, [...TINY, '--model', model, '--out', run], { timeoutMs: 120_000 });
    assert.equal(r.code, 0, r.stderr);
    const out = join(root, `${model}-pictures`);
    r = await runCli(COORDINATOR, ['visualize', '--run', run, '--samples', '3', '--out', out], { timeoutMs: 120_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    assert.match(r.stdout, new RegExp(`^layers: ${layers}$`, 'm'));
    // The first test images are a 7, a 2 and a 1.
    assert.match(r.stdout, /^test image #0: label 7, predicted \d \(\d+\.\d%\)$/m);
    assert.match(r.stdout, /^test image #2: label 1, predicted \d/m);

    const samples = [0, 1, 2].map((i) => decode(join(out, `sample-${i}.png`)));
    for (const img of samples) {
      // input + rows of 84 px cells: at least 3 rows of pictures, ≥ 10 cells wide for net's conv1
      assert.ok(img.height > 3 * 84, `${img.width}×${img.height}`);
      assert.ok(img.width > (model === 'net' ? 10 : 6) * 84, `${img.width}×${img.height}`);
      assert.ok(grayLevels(img) > 50, 'the feature maps show shades of gray');
    }
    assert.equal(samples[0].width, samples[1].width);
    const overview = decode(join(out, 'feature-maps.png'));
    // per sample: the input and conv1's channels on one line, conv2's on the next, aligned in
    // columns (net: 1 + 20 of them, lenet: 1 + 16), each cell at least 56 px
    const columns = model === 'net' ? 21 : 17;
    assert.ok(overview.width > columns * 56 && overview.width < columns * 80, `${overview.width}`);
    assert.ok(overview.height > 3 * 2 * 56 && overview.height < 3 * 2 * 90, `${overview.height}`);
    assert.ok(!existsSync(join(out, 'sample-3.png')));
  }
});

test('visualize: clear errors for a missing, unfinished or foreign run', async () => {
  const root = tempDir('mnist-visualize-');
  const out = join(root, 'pictures');
  let r = await runCli(COORDINATOR, ['visualize', '--run', join(root, 'nowhere'), '--out', out]);
  assert.equal(r.code, 1);
  oneLine(r.stderr, /^coordinator: error: --run .*nowhere: no such directory$/);

  // A run folder with a checkpoint but no summary.json: stopped before the end.
  const run = join(root, 'run');
  r = await runCli(COORDINATOR, [...TINY, '--out', run], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr);
  const stopped = join(root, 'stopped');
  mkdirSync(stopped);
  copyFileSync(join(run, 'checkpoint.bin'), join(stopped, 'checkpoint.bin'));
  r = await runCli(COORDINATOR, ['visualize', '--run', stopped, '--out', out]);
  assert.equal(r.code, 1);
  oneLine(r.stderr, /--run .*stopped: the run has not finished \(no summary\.json\); finish it with: coordinator --resume --out .*stopped$/);

  r = await runCli(COORDINATOR, ['visualize', '--run', out.replace('pictures', ''), '--out', out]);
  assert.equal(r.code, 1);
  oneLine(r.stderr, /not a training run \(no summary\.json\)$/);

  r = await runCli(COORDINATOR, ['visualize', '--run', run, '--samples', '0', '--out', out]);
  assert.equal(r.code, 2);
  oneLine(r.stderr, /--samples.*must be a positive integer/);

  r = await runCli(COORDINATOR, ['visualize', '--run', run, '--samples', '20000', '--out', out]);
  assert.equal(r.code, 1);
  oneLine(r.stderr, /--samples 20000: the test set has only 10000 images/);
  assert.ok(!existsSync(out), 'nothing written on errors');
});
