import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { COORDINATOR, readJson, runCli, tempDir } from './helpers.js';

const SMALL = ['--workers', '0', '--epochs', '1', '--train-limit', '512', '--test-limit', '200'];
const SUMMARY_KEYS = [
  'test_accuracy', 'test_loss', 'epochs', 'steps', 'workers', 'model', 'backend',
  'deterministic', 'train_samples_per_s', 'weights_sha256', 'worker_failures',
];

function assertOneLineError(stderr: string, pattern: RegExp): void {
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line, got:\n${stderr}`);
  assert.match(lines[0], pattern);
  assert.doesNotMatch(stderr, /\n\s+at /, 'no stack trace');
}

test('usage errors: one line naming the problem, exit status 2', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['--bogus'], /^coordinator: error: unknown option '--bogus'/],
    [['--batch-size', '0'], /--batch-size.*'0' is invalid\. must be a positive integer/],
    [['--batch-size', '-5'], /--batch-size.*must be a positive integer/],
    [['--lr', '-0.1'], /--lr.*must be a number > 0/],
    [['--lr', 'abc'], /--lr.*must be a number > 0/],
    [['--epochs', '0'], /--epochs.*must be a positive integer/],
    [['--model', 'resnet'], /--model.*must be one of net, lenet, strong/],
    [['--momentum', '1.5'], /--momentum.*\[0, 1\)/],
    [['--resume'], /--resume needs --out DIR/],
    [['--no-spawn', '--workers', '2'], /--no-spawn needs --listen ADDR/],
  ];
  for (const [args, pattern] of cases) {
    const r = await runCli(COORDINATOR, args);
    assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
    assertOneLineError(r.stderr, pattern);
  }
});

test('help shows every contract flag with its default', async () => {
  const r = await runCli(COORDINATOR, ['--help']);
  assert.equal(r.code, 0);
  for (const flag of ['--batch-size <n>', '--test-batch-size', '--epochs', '--lr', '--momentum', '--seed', '--log-interval', '--no-cuda', '--workers', '--no-spawn', '--listen', '--model', '--deterministic', '--train-limit', '--test-limit', '--out', '--resume', '--data', '--metrics']) {
    assert.ok(r.stdout.includes(flag), `--help lacks ${flag}`);
  }
  assert.match(r.stdout, /--batch-size <n>\s+input batch size for training \(default: 64\)/);
  assert.match(r.stdout, /--lr <lr>\s+learning rate \(default: 0\.01\)/);
});

test('bad data and unwritable output: one line naming the file, exit status 1', async () => {
  const dir = tempDir();
  const data = join(dir, 'data');
  mkdirSync(data);
  for (const f of ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte']) {
    writeFileSync(join(data, f), Buffer.from([0, 0, 8, 3, 0, 0, 0, 9]));
  }
  let r = await runCli(COORDINATOR, [...SMALL, '--data', data, '--out', join(dir, 'run1')]);
  assert.equal(r.code, 1, r.stderr);
  assertOneLineError(r.stderr, /data\/train-images-idx3-ubyte: truncated header/);

  r = await runCli(COORDINATOR, [...SMALL, '--data', join(dir, 'nowhere'), '--out', join(dir, 'run2')]);
  assert.equal(r.code, 1);
  assertOneLineError(r.stderr, /nowhere: MNIST data directory does not exist/);

  const readOnly = join(dir, 'ro');
  mkdirSync(readOnly);
  chmodSync(readOnly, 0o500);
  const file = join(dir, 'file');
  writeFileSync(file, 'x');
  r = await runCli(COORDINATOR, [...SMALL, '--out', join(file, 'sub')]);
  assert.equal(r.code, 1);
  assertOneLineError(r.stderr, /--out .*file\/sub: cannot write there \((ENOTDIR|EEXIST)\)/);
});

test('a small single-node run leaves everything the contract lists, with the example\'s log lines', async () => {
  const out = join(tempDir(), 'run');
  // A livelier lr than the default so that 8 steps visibly learn.
  const r = await runCli(COORDINATOR, [...SMALL, '--log-interval', '2', '--lr', '0.1', '--momentum', '0.9', '--out', out]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^Train Epoch: 1 \[0\/512 \(0%\)\]\tLoss: \d\.\d{6}$/m);
  assert.match(r.stdout, /^Train Epoch: 1 \[128\/512 \(25%\)\]\tLoss: \d\.\d{6}$/m);
  assert.match(r.stdout, /^Test set: Average loss: \d\.\d{4}, Accuracy: \d+\/200 \(\d+%\)$/m);
  assert.equal(r.stderr, '', 'nothing on stderr: no progress bar when piped, no warnings');

  const summary = readJson(join(out, 'summary.json'));
  for (const k of SUMMARY_KEYS) assert.ok(k in summary, `summary lacks ${k}`);
  assert.equal(summary.steps, 8);
  assert.equal(summary.workers, 0);
  assert.equal(summary.model, 'net');
  assert.equal(summary.backend, 'wasm');
  assert.match(summary.weights_sha256 as string, /^[0-9a-f]{64}$/);
  assert.ok((summary.test_accuracy as number) > 0.25, `accuracy ${summary.test_accuracy} after 512 samples (chance: 0.1)`);

  const metrics = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(metrics.filter((m) => m.type === 'train').length, 4);
  assert.equal(metrics.filter((m) => m.type === 'test').length, 1);
  for (const f of ['checkpoint.bin', 'model/model.json', 'model/weights.bin', 'log.jsonl']) assert.ok(existsSync(join(out, f)), `missing ${f}`);
  const log = readFileSync(join(out, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.ok(log.some((rec) => rec.config && rec.config.batchSize === 64), 'config logged at start');

  // The same folder again without --resume would overwrite a run: refused.
  const again = await runCli(COORDINATOR, [...SMALL, '--out', out]);
  assert.equal(again.code, 1);
  assertOneLineError(again.stderr, /already holds a run; continue it with --resume/);
});

test('deterministic mode: the same seed and flags give the same weights twice; another seed does not', async () => {
  const dir = tempDir();
  const run = async (name: string, extra: string[] = []): Promise<string> => {
    const r = await runCli(COORDINATOR, [...SMALL, '--deterministic', '--out', join(dir, name), ...extra]);
    assert.equal(r.code, 0, r.stderr);
    return readJson(join(dir, name, 'summary.json')).weights_sha256 as string;
  };
  const a = await run('a');
  assert.equal(await run('b'), a);
  assert.notEqual(await run('c', ['--seed', '2']), a);
});

test('--resume continues from the checkpoint to the weights of an uninterrupted run', async () => {
  const dir = tempDir();
  const full = await runCli(COORDINATOR, [...SMALL, '--deterministic', '--epochs', '2', '--out', join(dir, 'full')]);
  assert.equal(full.code, 0, full.stderr);
  const part = await runCli(COORDINATOR, [...SMALL, '--deterministic', '--epochs', '1', '--out', join(dir, 'part')]);
  assert.equal(part.code, 0, part.stderr);
  const resumed = await runCli(COORDINATOR, ['--workers', '0', '--epochs', '2', '--resume', '--out', join(dir, 'part')]);
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.match(resumed.stdout, /resuming from .*checkpoint\.bin at epoch 2, step 8/);
  const a = readJson(join(dir, 'full', 'summary.json'));
  const b = readJson(join(dir, 'part', 'summary.json'));
  assert.equal(b.weights_sha256, a.weights_sha256);
  assert.equal(b.steps, 16);
  const tests = readFileSync(join(dir, 'part', 'metrics.jsonl'), 'utf8').trim().split('\n').filter((l) => l.includes('"test"'));
  assert.equal(tests.length, 2);
});

test('--model strong brings its own defaults; flags given on the command line still win', async () => {
  const out = join(tempDir(), 'strong');
  const r = await runCli(COORDINATOR, ['--workers', '0', '--model', 'strong', '--epochs', '1', '--train-limit', '256', '--test-limit', '100', '--out', out]);
  assert.equal(r.code, 0, r.stderr);
  const config = readJson(join(out, 'summary.json')).config as Record<string, unknown>;
  assert.equal(config.model, 'strong');
  assert.equal(config.epochs, 1, 'given on the command line');
  assert.equal(config.batchSize, 128);
  assert.equal(config.momentum, 0.9);
  assert.equal(config.augment, true);
  assert.equal(config.lrSchedule, 'cosine');
});

test('a corrupt newest checkpoint: --resume warns and continues from the previous one', async () => {
  const out = join(tempDir(), 'run');
  const first = await runCli(COORDINATOR, [...SMALL, '--deterministic', '--epochs', '2', '--out', out]);
  assert.equal(first.code, 0, first.stderr);
  const path = join(out, 'checkpoint.bin');
  const bytes = readFileSync(path);
  bytes[bytes.length >> 1] ^= 0xff;
  writeFileSync(path, bytes);
  const resumed = await runCli(COORDINATOR, ['--workers', '0', '--epochs', '3', '--resume', '--out', out]);
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.match(resumed.stderr, /warning: skipped a checkpoint: .*checkpoint\.bin: checksum mismatch/);
  assert.match(resumed.stdout, /resuming from .*checkpoint\.prev\.bin at epoch 2, step 8/);
  assert.equal(readJson(join(out, 'summary.json')).steps, 24);
});

test('npx finds both commands of this package (the README\'s way to run them)', async () => {
  const { execFileSync } = await import('node:child_process');
  const root = new URL('../../', import.meta.url);
  for (const cmd of ['coordinator', 'worker']) {
    const out = execFileSync('npx', ['--no-install', cmd, '--help'], { cwd: root, encoding: 'utf8', timeout: 60_000 });
    assert.match(out, new RegExp(`^Usage: ${cmd} `));
  }
});
