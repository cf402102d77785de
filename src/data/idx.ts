/**
 * Reader for the IDX format MNIST ships in (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS").
 * Header: two zero bytes, a type code, the number of dimensions, then one big-endian uint32 per
 * dimension; the data follow, row-major. Files may be gzip-compressed.
 */
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { UserError } from '../util/errors.js';

/** Type code 0x08: unsigned byte, the only type MNIST uses. */
const IDX_TYPE_UBYTE = 0x08;
/** Magic number of an image file: ubyte data, 3 dimensions (count, rows, columns). */
export const IDX_MAGIC_IMAGES = 0x00000803;
/** Magic number of a label file: ubyte data, 1 dimension (count). */
export const IDX_MAGIC_LABELS = 0x00000801;
const GZIP_MAGIC = [0x1f, 0x8b];

export interface IdxArray {
  dims: number[];
  data: Uint8Array;
}

export class IdxFormatError extends UserError {}

/** Parses IDX bytes; `name` is the file named in errors. */
export function parseIdx(bytes: Uint8Array, name: string, expectedMagic?: number): IdxArray {
  if (bytes.length >= 2 && bytes[0] === GZIP_MAGIC[0] && bytes[1] === GZIP_MAGIC[1]) {
    try {
      bytes = gunzipSync(bytes);
    } catch (e) {
      throw new IdxFormatError(`${name}: corrupt gzip data (${(e as Error).message})`);
    }
  }
  if (bytes.length < 4) throw new IdxFormatError(`${name}: too short for an IDX header (${bytes.length} bytes)`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(0);
  if (bytes[0] !== 0 || bytes[1] !== 0 || bytes[2] !== IDX_TYPE_UBYTE) {
    throw new IdxFormatError(`${name}: not an unsigned-byte IDX file (magic number 0x${magic.toString(16).padStart(8, '0')})`);
  }
  if (expectedMagic !== undefined && magic !== expectedMagic) {
    throw new IdxFormatError(
      `${name}: wrong magic number 0x${magic.toString(16).padStart(8, '0')}, expected 0x${expectedMagic.toString(16).padStart(8, '0')}`,
    );
  }
  const rank = bytes[3];
  const headerLength = 4 + 4 * rank;
  if (bytes.length < headerLength) throw new IdxFormatError(`${name}: truncated header`);
  const dims: number[] = [];
  for (let i = 0; i < rank; i++) dims.push(view.getUint32(4 + 4 * i));
  const expected = dims.reduce((a, b) => a * b, 1);
  const actual = bytes.length - headerLength;
  if (actual !== expected) {
    throw new IdxFormatError(
      `${name}: header says ${dims.join('×')} = ${expected} bytes of data, file has ${actual}${actual < expected ? ' (truncated)' : ''}`,
    );
  }
  return { dims, data: bytes.subarray(headerLength) };
}

export function readIdxFile(path: string, expectedMagic?: number): IdxArray {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new IdxFormatError(`${path}: cannot read (${code ?? (e as Error).message})`);
  }
  return parseIdx(bytes, path, expectedMagic);
}
