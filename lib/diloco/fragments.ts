/** Parameter tensors, their grouping into fragments, and the Streaming DiLoCo schedule. */
import type { ParamsInput } from './types';
import { InvalidArgumentError } from '../errors';
import { checkInt, checkOneOf, describeValue } from '../validate';

/** One parameter tensor: a Float32Array view into the model. */
export interface NamedTensor {
  name: string;
  data: Float32Array;
}

/** Normalizes the accepted parameter forms into a list of named tensors; rejects aliasing views. */
export function normalizeParams(params: ParamsInput): NamedTensor[] {
  let list: NamedTensor[];
  if (params instanceof Float32Array) list = [{ name: 'params', data: params }];
  else if (Array.isArray(params)) list = params.map((data, i) => ({ name: `t${i}`, data }));
  else if (params !== null && typeof params === 'object' && !ArrayBuffer.isView(params)) {
    list = Object.entries(params).map(([name, data]) => ({ name, data }));
  } else {
    throw new TypeError(
      `DiLoCo: "params" must be a Float32Array, an array of Float32Array or an object of named Float32Array, got ${describeValue(params)}`,
    );
  }
  if (list.length === 0) throw new RangeError('DiLoCo: "params" holds no tensors');
  for (const t of list) checkFloat32(`params.${t.name}`, t.data);
  // Two views over the same bytes would be averaged twice and written twice: refuse.
  const sorted = list
    .map((t) => ({ t, buf: t.data.buffer, start: t.data.byteOffset, end: t.data.byteOffset + t.data.byteLength }))
    .sort((a, b) => a.start - b.start);
  for (let i = 0; i < sorted.length; i++) {
    for (let j = i + 1; j < sorted.length && sorted[j].start < sorted[i].end; j++) {
      if (sorted[j].buf === sorted[i].buf) {
        throw new RangeError(`DiLoCo: parameter tensors "${sorted[i].t.name}" and "${sorted[j].t.name}" overlap in memory`);
      }
    }
  }
  return list;
}

/** Total element count of tensors. */
export function countElements(tensors: readonly NamedTensor[]): number {
  let n = 0;
  for (const t of tensors) n += t.data.length;
  return n;
}

export type FragmentPattern = 'sequential' | 'strided';

/**
 * Splits tensors into `count` fragments.
 * - 'sequential': consecutive tensors, cut where the running element count crosses k/count of the total, so
 *   fragments are contiguous groups of layers of about equal size (every fragment gets at least one tensor).
 * - 'strided': tensor i goes to fragment i mod count (the paper's strided pattern: each fragment spans the depth).
 *
 * @returns for each fragment the indices of its tensors, in order.
 */
export function partitionTensors(tensors: readonly NamedTensor[], count: number, pattern: FragmentPattern = 'sequential'): number[][] {
  checkInt('fragments', count, 1);
  checkOneOf('fragmentPattern', pattern, ['sequential', 'strided'] as const);
  if (count > tensors.length) {
    throw new RangeError(
      `DiLoCo option "fragments" (${count}) exceeds the number of parameter tensors (${tensors.length}); ` +
        'pass more, smaller tensor views (e.g. split a weight matrix into row blocks with subarray) or fewer fragments',
    );
  }
  const out: number[][] = Array.from({ length: count }, () => []);
  if (pattern === 'strided') {
    tensors.forEach((_, i) => out[i % count].push(i));
    return out;
  }
  const total = countElements(tensors);
  let acc = 0;
  let f = 0;
  for (let i = 0; i < tensors.length; i++) {
    if (out[f].length > 0 && f < count - 1) {
      const tensorsLeft = tensors.length - i;
      const mustAdvance = tensorsLeft === count - 1 - f; // one tensor left for each later fragment
      const full = acc + tensors[i].data.length / 2 > (total * (f + 1)) / count;
      if (mustAdvance || full) f++;
    }
    out[f].push(i);
    acc += tensors[i].data.length;
  }
  return out;
}

/**
 * Inner-step offsets of the fragments: fragment p first syncs at step `offset[p]` (then every `interval` steps),
 * evenly staggered so that at most about one fragment starts a sync at a time.
 */
export function fragmentOffsets(count: number, interval: number): number[] {
  return Array.from({ length: count }, (_, p) => Math.floor((p * interval) / count));
}

/**
 * The fragments (indices) that start a sync after inner step `step` (1-based: the first inner step is 1).
 * Fragment p syncs when `step % interval === offset[p] % interval`; offsets of 0 mean "every `interval` steps".
 */
export function fragmentsDueAt(step: number, interval: number, offsets: readonly number[]): number[] {
  const due: number[] = [];
  const r = step % interval;
  for (let p = 0; p < offsets.length; p++) if (offsets[p] % interval === r) due.push(p);
  return due;
}

function checkFloat32(name: string, v: unknown): Float32Array {
  if (!(v instanceof Float32Array)) {
    throw new InvalidArgumentError(`DiLoCo: "${name}" must be a Float32Array (a view of the model's parameters), got ${describeValue(v)}`);
  }
  if (v.length === 0) throw new InvalidArgumentError(`DiLoCo: "${name}" is empty; every parameter tensor needs at least one element`);
  return v;
}
