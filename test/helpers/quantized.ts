// Inputs, float64 references and per-element error bounds for the quantized all-reduce, and the `run` command of
// the engine peers (test/fixtures/engine-peer.ts). The bounds restate docs/quantization.md independently of
// the native code: they only assume the chunk layout (chunk c = elements [floor(count*c/n), floor(count*(c+1)/n)),
// blocks of blockSize elements from each chunk's start) and the codecs' documented per-value errors.
import { floatToBf16Bits, floatToHalfBits, rng, toNumbers } from './data';
import type { DType, TensorArray } from '../../lib/dtype';
import type { PeerHandle } from './ring';

export type Dist = 'normal' | 'uniform' | 'heavy' | 'constant' | 'bias';
export type CodecName = 'uint8' | 'uint4' | 'float16' | 'bfloat16';
export interface Quant { codec: CodecName; blockSize?: number; stochastic?: boolean; seed?: number }

/** Input values (float64) of `rank`: the same per-peer distribution for every rank, independent draws. */
export function makeValues(dist: Dist, count: number, rank: number, seed: number): Float64Array {
  const r = rng(seed * 7919 + rank * 104729 + 17);
  const normal = () => {
    const u = 1 - r();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * r());
  };
  const out = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    switch (dist) {
      case 'normal': out[i] = normal(); break;
      case 'uniform': out[i] = (r() - 0.5) * 4; break;
      case 'heavy': out[i] = normal() / Math.sqrt(1 - r()); break; // Student-t-like, infinite variance
      case 'constant': out[i] = 0.375 * (rank + 1) - 0.7 + seed * 0.01; break;
      case 'bias': {
        // Blocks of 16 spanning exactly [0, 15] (uint4 scale 1), other values k + 0.3: nearest rounding is biased.
        const k = i % 16;
        out[i] = k === 0 ? 0 : k === 1 ? 15 : (i % 13) + 0.3;
        break;
      }
    }
  }
  return out;
}

/** The values as an array of `dtype` (rounded to nearest-even). */
export function toDType(dtype: DType, v: Float64Array): TensorArray {
  switch (dtype) {
    case 'float32': return Float32Array.from(v);
    case 'float64': return Float64Array.from(v);
    case 'float16': return Uint16Array.from(v, (x) => floatToHalfBits(x));
    case 'bfloat16': return Uint16Array.from(v, (x) => floatToBf16Bits(x));
    default: throw new Error(`not a float dtype: ${dtype}`);
  }
}

export function makeQuantInput(dtype: DType, dist: Dist, count: number, rank: number, seed: number): TensorArray {
  return toDType(dtype, makeValues(dist, count, rank, seed));
}

const U = 2 ** -24;
const f32 = Math.fround;

export interface ErrorStats {
  rms: number; max: number; mean: number; refRms: number;
  worstRatio: number; worstIndex: number; violations: number; firstViolation?: string;
}

/**
 * Exact float64 reference of the sum/avg and, per element, the largest error the algorithm may make:
 * each foreign contribution quantized once, float32 accumulation, the result quantized once, the output rounded
 * to its dtype.
 */
export function referenceAndBound(
  dtype: DType, op: 'sum' | 'avg', inputs: TensorArray[], q: Quant,
): { ref: Float64Array; bound: Float64Array } {
  const n = inputs.length;
  const xs = inputs.map((x) => Float64Array.from(toNumbers(dtype, x)));
  const count = xs[0].length;
  const ref = new Float64Array(count);
  const absSum = new Float64Array(count);
  for (const x of xs) for (let j = 0; j < count; j++) { ref[j] += x[j]; absSum[j] += Math.abs(x[j]); }
  const div = op === 'avg' ? n : 1;
  for (let j = 0; j < count; j++) ref[j] /= div;
  const blocky = q.codec === 'uint8' || q.codec === 'uint4';
  const L = q.codec === 'uint8' ? 255 : 15;
  const bs = blocky ? q.blockSize ?? 256 : 1;
  const rel = q.codec === 'float16' ? 2 ** -11 : 2 ** -8;
  const tiny = q.codec === 'float16' ? 2 ** -25 : 2 ** -133;
  const conv = dtype === 'float64' ? U : 0; // float64 inputs are rounded to float32 before encoding
  const outRel = dtype === 'float16' ? 2 ** -11 : dtype === 'bfloat16' ? 2 ** -8 : 0;
  const outTiny = dtype === 'float16' ? 2 ** -25 : 0;
  const bound = new Float64Array(count);
  const ein = new Float64Array(count);
  for (let c = 0; c < n; c++) {
    const start = Math.floor((count * c) / n);
    const end = Math.floor((count * (c + 1)) / n);
    for (let b0 = start; b0 < end; b0 += bs) {
      const b1 = Math.min(end, b0 + bs);
      for (let j = b0; j < b1; j++) ein[j] = 0;
      for (let p = 0; p < n; p++) {
        if (p === c) continue; // the owner's own input is added exactly
        const x = xs[p];
        if (blocky) {
          let lo = Infinity, hi = -Infinity;
          for (let j = b0; j < b1; j++) { const v = f32(x[j]); lo = Math.min(lo, v); hi = Math.max(hi, v); }
          const scale = (hi - lo) / L * (1 + 2 * U);
          const e = (q.stochastic ? scale : scale / 2) + 4 * U * Math.max(Math.abs(lo), Math.abs(hi));
          for (let j = b0; j < b1; j++) ein[j] += e;
        } else {
          for (let j = b0; j < b1; j++) ein[j] += rel * Math.abs(x[j]) * (1 + U) + tiny;
        }
      }
      let lo = Infinity, hi = -Infinity, maxE = 0;
      for (let j = b0; j < b1; j++) {
        // float32 conversion of float64 inputs, n float32 additions, one float32 division for avg.
        ein[j] = (ein[j] + conv * absSum[j] + (n + 1) * U * absSum[j]) / div + U * Math.abs(ref[j]);
        lo = Math.min(lo, ref[j]); hi = Math.max(hi, ref[j]); maxE = Math.max(maxE, ein[j]);
      }
      let efinBlock = 0;
      if (blocky) {
        const scale = (hi - lo + 2 * maxE) / L * (1 + 2 * U);
        efinBlock = (q.stochastic ? scale : scale / 2) + 4 * U * (Math.max(Math.abs(lo), Math.abs(hi)) + maxE);
      }
      for (let j = b0; j < b1; j++) {
        const efin = blocky ? efinBlock : rel * (Math.abs(ref[j]) + ein[j]) * (1 + U) + tiny;
        const e = ein[j] + efin;
        bound[j] = (e + outRel * (Math.abs(ref[j]) + e) + outTiny) * (1 + 1e-9) + 1e-300;
      }
    }
  }
  return { ref, bound };
}

export function errorStats(got: ArrayLike<number>, ref: Float64Array, bound?: Float64Array): ErrorStats {
  let se = 0, sr = 0, max = 0, sum = 0, worstRatio = 0, worstIndex = -1, violations = 0;
  let firstViolation: string | undefined;
  for (let j = 0; j < ref.length; j++) {
    const e = got[j] - ref[j];
    se += e * e; sr += ref[j] * ref[j]; sum += e;
    const a = Math.abs(e);
    if (!(a <= max)) max = a;
    if (bound) {
      const ratio = a / bound[j];
      if (!(ratio <= worstRatio)) { worstRatio = ratio; worstIndex = j; }
      if (!(a <= bound[j])) {
        violations++;
        firstViolation ??= `element ${j}: got ${got[j]}, want ${ref[j]} +- ${bound[j]}`;
      }
    }
  }
  const m = Math.max(1, ref.length);
  return { rms: Math.sqrt(se / m), max, mean: sum / m, refRms: Math.sqrt(sr / m), worstRatio, worstIndex, violations, firstViolation };
}

/** Runs the same quantized op list (or a per-peer one) on every peer; returns results[peer][op]. */
export async function runQ(peers: PeerHandle[], ops: Record<string, unknown>[] | ((p: PeerHandle) => Record<string, unknown>[]), timeoutMs = 60_000): Promise<any[][]> {
  const replies = await Promise.all(peers.map((p) => p.request({ cmd: 'run', ops: typeof ops === 'function' ? ops(p) : ops }, timeoutMs)));
  return replies.map((r) => r.results ?? (r.exited ? [{ ok: false, exited: true }] : []));
}
