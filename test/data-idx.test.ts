import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { IDX_MAGIC_IMAGES, IDX_MAGIC_LABELS, parseIdx, readIdxFile } from '../src/data/idx.js';
import { MNIST_MEAN, MNIST_STD, loadMnist, normalisePixels } from '../src/data/mnist.js';
import { tempDir } from './helpers.js';

function idx(magic: number, dims: number[], data: Uint8Array): Buffer {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header.writeUInt32BE(magic, 0);
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([header, data]);
}

test('parses raw and gzipped IDX files', () => {
  const raw = idx(IDX_MAGIC_LABELS, [3], Uint8Array.from([7, 1, 9]));
  for (const bytes of [raw, gzipSync(raw)]) {
    const parsed = parseIdx(bytes, 'labels', IDX_MAGIC_LABELS);
    assert.deepEqual(parsed.dims, [3]);
    assert.deepEqual([...parsed.data], [7, 1, 9]);
  }
});

test('rejects a wrong magic number, naming the file', () => {
  const bytes = idx(IDX_MAGIC_LABELS, [2], Uint8Array.from([1, 2]));
  assert.throws(() => parseIdx(bytes, 'x/train-images', IDX_MAGIC_IMAGES), /x\/train-images: wrong magic number 0x00000801, expected 0x00000803/);
  assert.throws(() => parseIdx(Buffer.from('hello world!'), 'f', IDX_MAGIC_IMAGES), /f: not an unsigned-byte IDX file/);
});

test('rejects truncated and oversized data and corrupt gzip', () => {
  const bytes = idx(IDX_MAGIC_IMAGES, [2, 28, 28], new Uint8Array(2 * 784));
  assert.throws(() => parseIdx(bytes.subarray(0, bytes.length - 10), 'img', IDX_MAGIC_IMAGES), /img: header says 2×28×28 = 1568 bytes of data, file has 1558 \(truncated\)/);
  assert.throws(() => parseIdx(Buffer.concat([bytes, Buffer.alloc(3)]), 'img', IDX_MAGIC_IMAGES), /file has 1571/);
  const gz = gzipSync(bytes);
  assert.throws(() => parseIdx(gz.subarray(0, gz.length - 8), 'img.gz'), /img.gz: corrupt gzip data/);
  assert.throws(() => readIdxFile('/nonexistent/file'), /\/nonexistent\/file: cannot read \(ENOENT\)/);
});

function writeSet(dir: string, opts: { labels?: Uint8Array; images?: number; gz?: boolean } = {}): void {
  mkdirSync(dir, { recursive: true });
  const labels = opts.labels ?? Uint8Array.from([0, 1, 2, 3]);
  const nImages = opts.images ?? labels.length;
  const images = new Uint8Array(nImages * 784).map((_, i) => i % 256);
  const wrap = (b: Buffer): Buffer => (opts.gz ? gzipSync(b) : b);
  const sfx = opts.gz ? '.gz' : '';
  for (const prefix of ['train', 't10k']) {
    writeFileSync(join(dir, `${prefix}-images-idx3-ubyte${sfx}`), wrap(idx(IDX_MAGIC_IMAGES, [nImages, 28, 28], images)));
    writeFileSync(join(dir, `${prefix}-labels-idx1-ubyte${sfx}`), wrap(idx(IDX_MAGIC_LABELS, [labels.length], labels)));
  }
}

test('loads a data directory (raw or .gz), applies limits, checks labels and counts', () => {
  const dir = tempDir();
  writeSet(join(dir, 'raw'));
  writeSet(join(dir, 'gz'), { gz: true });
  for (const sub of ['raw', 'gz']) {
    const data = loadMnist({ dir: join(dir, sub), trainLimit: 3 });
    assert.equal(data.train.count, 3);
    assert.equal(data.train.images.length, 3 * 784);
    assert.equal(data.test.count, 4);
    assert.deepEqual([...data.test.labels], [0, 1, 2, 3]);
  }
  writeSet(join(dir, 'badlabel'), { labels: Uint8Array.from([0, 12]) });
  assert.throws(() => loadMnist({ dir: join(dir, 'badlabel') }), /train-labels-idx1-ubyte: label 12 at index 1 is outside 0..9/);
  writeSet(join(dir, 'mismatch'), { labels: Uint8Array.from([0, 1, 2]), images: 5 });
  assert.throws(() => loadMnist({ dir: join(dir, 'mismatch') }), /3 labels for 5 images/);
  assert.throws(() => loadMnist({ dir: join(dir, 'missing') }), /does not exist/);
});

test('the bundled MNIST has the expected sizes and statistics', () => {
  const data = loadMnist();
  assert.equal(data.train.count, 60000);
  assert.equal(data.test.count, 10000);
  let sum = 0;
  let sumSq = 0;
  for (const p of data.train.images) {
    sum += p / 255;
    sumSq += (p / 255) ** 2;
  }
  const n = data.train.images.length;
  const mean = sum / n;
  assert.ok(Math.abs(mean - MNIST_MEAN) < 1e-3, `mean ${mean}`);
  assert.ok(Math.abs(Math.sqrt(sumSq / n - mean * mean) - MNIST_STD) < 1e-3);
  const x = normalisePixels(Uint8Array.from([0, 255]));
  assert.ok(Math.abs(x[0] - -0.1307 / 0.3081) < 1e-6 && Math.abs(x[1] - (1 - 0.1307) / 0.3081) < 1e-6);
});
