import { Packr } from 'msgpackr';

/**
 * msgpack with typed arrays carried as raw little-endian bytes (msgpackr's typed-array extension)
 * and restored as the same typed array type: tensors never travel as lists of numbers.
 */
export function createCodec(): Packr {
  return new Packr({ moreTypes: true, useRecords: false });
}
