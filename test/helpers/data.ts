// Deterministic test inputs and JS reference reductions (independent of the native kernels).
import { createHash } from 'node:crypto';
import type { DType, ReduceOp, TensorArray } from '../../lib/dtype';
import { mulberry32 } from '../../lib/random';

/** Small deterministic PRNG (mulberry32). */
export const rng = mulberry32;

export function floatToHalfBits(f: number): number {
  const buf = new DataView(new ArrayBuffer(4));
  buf.setFloat32(0, f);
  const x = buf.getUint32(0);
  const sign = (x >>> 16) & 0x8000;
  let exp = ((x >>> 23) & 0xff) - 127 + 15;
  let mant = x & 0x7fffff;
  if (((x >>> 23) & 0xff) === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  if (exp >= 0x1f) return sign | 0x7c00;
  if (exp <= 0) {
    if (exp < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - exp;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (exp << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
  return sign | h;
}

export function halfBitsToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

export function floatToBf16Bits(f: number): number {
  const buf = new DataView(new ArrayBuffer(4));
  buf.setFloat32(0, f);
  const x = buf.getUint32(0);
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff)) return ((x >>> 16) | 0x40) & 0xffff;
  const lsb = (x >>> 16) & 1;
  return ((x + 0x7fff + lsb) >>> 16) & 0xffff;
}

export function bf16BitsToFloat(h: number): number {
  const buf = new DataView(new ArrayBuffer(4));
  buf.setUint32(0, h << 16);
  return buf.getFloat32(0);
}

/** Input of `rank` for a test: small values so integer sums stay exact and float sums well-conditioned. */
export function makeInput(dtype: DType, count: number, rank: number, seed: number): TensorArray {
  const r = rng(seed * 7919 + rank * 104729 + 1);
  const small = () => Math.floor(r() * 7) - 3; // -3..3
  switch (dtype) {
    case 'float32': return Float32Array.from({ length: count }, () => (r() - 0.5) * 4);
    case 'float64': return Float64Array.from({ length: count }, () => (r() - 0.5) * 4);
    case 'float16': return Uint16Array.from({ length: count }, () => floatToHalfBits(small() * 0.5));
    case 'bfloat16': return Uint16Array.from({ length: count }, () => floatToBf16Bits(small() * 0.5));
    case 'int8': return Int8Array.from({ length: count }, small);
    case 'uint8': return Uint8Array.from({ length: count }, () => Math.floor(r() * 4));
    case 'int16': return Int16Array.from({ length: count }, small);
    case 'uint16': return Uint16Array.from({ length: count }, () => Math.floor(r() * 4));
    case 'int32': return Int32Array.from({ length: count }, small);
    case 'uint32': return Uint32Array.from({ length: count }, () => Math.floor(r() * 4));
    case 'int64': return BigInt64Array.from({ length: count }, () => BigInt(small()));
    case 'uint64': return BigUint64Array.from({ length: count }, () => BigInt(Math.floor(r() * 4)));
  }
}

/** Element values as JS numbers (floats decoded from 16-bit patterns). */
export function toNumbers(dtype: DType, data: TensorArray): number[] {
  if (dtype === 'float16') return Array.from(data as Uint16Array, halfBitsToFloat);
  if (dtype === 'bfloat16') return Array.from(data as Uint16Array, bf16BitsToFloat);
  return Array.from(data as ArrayLike<number | bigint>, Number);
}

const INT_BITS: Partial<Record<DType, [number, boolean]>> = {
  int8: [8, true], uint8: [8, false], int16: [16, true], uint16: [16, false],
  int32: [32, true], uint32: [32, false], int64: [64, true], uint64: [64, false],
};

/** Two's-complement wrap of an exact integer to a dtype (the documented overflow behaviour). */
export function wrapInt(dtype: DType, v: number): number {
  const spec = INT_BITS[dtype];
  if (!spec) return v;
  const [bits, signed] = spec;
  const x = signed ? BigInt.asIntN(bits, BigInt(v)) : BigInt.asUintN(bits, BigInt(v));
  return Number(x);
}

/** Reference reduction of several peers' inputs in float64 / exact integers (wrapped like the kernels). */
export function referenceReduce(dtype: DType, op: ReduceOp, inputs: TensorArray[]): number[] {
  const cols = inputs.map((x) => toNumbers(dtype, x));
  const n = inputs.length;
  const isFloat = dtype.startsWith('float') || dtype === 'bfloat16';
  return cols[0].map((_, j) => {
    const vals = cols.map((c) => c[j]);
    switch (op) {
      case 'sum': return wrapInt(dtype, vals.reduce((a, b) => a + b, 0));
      case 'avg': {
        const s = vals.reduce((a, b) => a + b, 0);
        return isFloat ? s / n : Math.trunc(wrapInt(dtype, s) / n);
      }
      case 'prod': return wrapInt(dtype, vals.reduce((a, b) => a * b, 1));
      case 'min': return Math.min(...vals);
      case 'max': return Math.max(...vals);
    }
  });
}

export function hashBytes(data: ArrayBufferView): string {
  return createHash('sha256').update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)).digest('hex').slice(0, 16);
}

/** Deterministic 32-bit words from a seed (xorshift32), each ANDed with `mask`. */
function fillWords(words: Uint32Array, seed: number, mask: number): void {
  let x = (seed * 2654435761 + 0x9e3779b9) >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    words[i] = (x & mask) >>> 0;
  }
}

/** Deterministic bytes from a seed (whole words from xorshift32, then a byte pattern for the tail). */
export function fillFromSeed(bytes: Uint8Array, seed: number): void {
  fillWords(new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2), seed, 0xffffffff);
  for (let i = (bytes.byteLength >>> 2) * 4; i < bytes.length; i++) bytes[i] = (seed + i) & 0xff;
}

/** Deterministic finite float32 values from a seed. */
export function finiteFloatsFromSeed(a: Float32Array, seed: number): void {
  fillWords(new Uint32Array(a.buffer, a.byteOffset, a.length), seed, 0x3f7fffff);
}
