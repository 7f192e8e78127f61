/**
 * Weighted averages (`allReduce(x, { op: 'avg', weight })`): each peer contributes `weight * x` and `weight` in
 * ONE buffer (the weight rides as an extra last element), the group sums it with the ordinary all-reduce, and
 * every peer divides the same summed bits by the same summed weight, so the result is bit-identical on every
 * peer and, under churn, a retry with the survivors reweights over the survivors (the sum and the total travel
 * in the same committed operation).
 *
 * Accumulation type: float64 for float64 data, float32 for float32, float16 and bfloat16 (16-bit data is widened
 * exactly, summed in float32, and the quotient rounded back to nearest-even, as the kernels' avg does).
 */
import { native } from './binding';
import { DType } from './dtype';
import { InvalidArgumentError } from './errors';

/** The dtypes a weighted average takes. */
export const WEIGHTED_DTYPES: readonly DType[] = ['float32', 'float64', 'float16', 'bfloat16'];

const CODEC_OF: Partial<Record<DType, number>> = { float16: 3, bfloat16: 4 };

/**
 * Checks a `weight` option against the rest of the options; returns the weight. Throws InvalidArgumentError
 * (INVALID_ARGUMENT) for a weight that is not a finite number >= 0, an op other than 'avg', an integer dtype,
 * or quantization.
 */
export function checkWeighted(weight: unknown, op: unknown, dtype: DType, quantized: boolean): number {
  if (typeof weight !== 'number' || !Number.isFinite(weight) || weight < 0) {
    throw new InvalidArgumentError(
      `Expected "weight" to be a finite number >= 0 (e.g. the tokens or samples of this step), got ${typeof weight === 'number' ? weight : typeof weight}`,
    );
  }
  if (op !== 'avg') throw new InvalidArgumentError(`"weight" applies to op 'avg' only, got op ${JSON.stringify(op ?? 'sum')}: pass { op: 'avg', weight }`);
  if (!WEIGHTED_DTYPES.includes(dtype)) {
    throw new InvalidArgumentError(`A weighted average needs float data (float32, float64, float16, bfloat16), got ${dtype}`);
  }
  if (quantized) throw new InvalidArgumentError('A weighted average cannot be quantized (the total weight must travel exactly): leave "quantization" out');
  return weight;
}

/** The accumulation dtype of a weighted average of `dtype`. */
export function accumulationType(dtype: DType): 'float32' | 'float64' {
  return dtype === 'float64' ? 'float64' : 'float32';
}

/** Elements per slice of work between two turns of the event loop (about a millisecond each). */
const CHUNK = 1 << 18;

/** Runs `work(start, end)` over [0, n) in slices, letting the event loop run between them (timers, sockets). */
async function inSlices(n: number, work: (start: number, end: number) => void): Promise<void> {
  for (let start = 0; start < n; start += CHUNK) {
    if (start > 0) await new Promise((resolve) => setImmediate(resolve));
    work(start, Math.min(n, start + CHUNK));
  }
}

/**
 * The buffer a peer all-reduces with op 'sum': `weight * x[i]` (rounded once to the accumulation type) for
 * every element, then `weight` itself, so that n + 1 elements hold this peer's share of the weighted sum and of
 * the total. 16-bit floats are widened exactly.
 */
export async function weightedContribution(data: ArrayBufferView & { length: number }, dtype: DType, weight: number): Promise<Float32Array | Float64Array> {
  const n = data.length;
  const ext = dtype === 'float64' ? new Float64Array(n + 1) : new Float32Array(n + 1);
  // Rounded to the accumulation type first, so the weight a peer multiplies by is the one it adds to the total.
  const w = dtype === 'float64' ? weight : Math.fround(weight);
  const codec = CODEC_OF[dtype];
  await inSlices(n, (start, end) => {
    let x = data as unknown as ArrayLike<number>;
    let offset = start;
    if (codec !== undefined) {
      const wide = ext.subarray(start, end) as Float32Array;
      native().decode(codec, new Uint8Array(data.buffer, data.byteOffset + 2 * start, 2 * (end - start)), end - start, 256, wide);
      x = wide;
      offset = 0;
    }
    for (let i = start; i < end; i++) ext[i] = w * x[i - start + offset];
  });
  ext[n] = w;
  return ext;
}

/**
 * Writes the weighted average into `out` (dtype `dtype`, n elements) from the summed buffer: `sum[i] / total`,
 * computed the same way on every peer (float32: the correctly rounded quotient; 16-bit: that quotient rounded to
 * nearest-even). Throws InvalidArgumentError when the total weight is zero (every peer passed 0) or not finite.
 */
export async function finishWeighted(sum: Float32Array | Float64Array, dtype: DType, out: ArrayBufferView & { length: number }, worldSize: number): Promise<void> {
  const n = sum.length - 1;
  const total = sum[n];
  if (total === 0) throw new InvalidArgumentError(`Weighted average over ${worldSize} peer(s): the total weight is 0 (every peer passed weight 0), so there is nothing to average`);
  if (!Number.isFinite(total)) throw new InvalidArgumentError(`Weighted average over ${worldSize} peer(s): the total weight overflowed (${total}); scale the weights down`);
  const codec = CODEC_OF[dtype];
  await inSlices(n, (start, end) => {
    if (codec === undefined) {
      const o = out as Float32Array | Float64Array; // a float32 store rounds the double quotient once: correctly rounded
      for (let i = start; i < end; i++) o[i] = sum[i] / total;
      return;
    }
    const q = sum.subarray(start, end) as Float32Array; // the sum is not needed after this slice: reuse it
    for (let i = 0; i < q.length; i++) q[i] = q[i] / total;
    native().encode(codec, q, 256, false, 0, new Uint8Array(out.buffer, out.byteOffset + 2 * start, 2 * (end - start)));
  });
}
