// Reduction kernels for every dtype x op against a JS reference, including NaN, Inf, -0 and integer overflow.
import t from 'tap';
import { native } from '../../lib/binding';
import { DTYPE_CODES, REDUCE_OP_CODES, DType, ReduceOp } from '../../lib/dtype';
import { floatToHalfBits, halfBitsToFloat, floatToBf16Bits, bf16BitsToFloat, rng, wrapInt } from '../helpers/data';

const addon = native();

const INTS: [DType, any, number, number][] = [
  ['int8', Int8Array, -128, 127], ['uint8', Uint8Array, 0, 255], ['int16', Int16Array, -32768, 32767],
  ['uint16', Uint16Array, 0, 65535], ['int32', Int32Array, -(2 ** 31), 2 ** 31 - 1], ['uint32', Uint32Array, 0, 2 ** 32 - 1],
];

function intRef(dtype: DType, op: ReduceOp, a: number, b: number): number {
  switch (op) {
    case 'sum': case 'avg': return wrapInt(dtype, a + b);
    case 'prod': return Number(wrap64(dtype, BigInt(a) * BigInt(b))); // exact: products exceed 2^53
    case 'min': return Math.min(a, b);
    case 'max': return Math.max(a, b);
  }
}
function wrap64(dtype: DType, v: bigint): bigint {
  const bits = dtype.endsWith('8') ? 8 : dtype.endsWith('16') ? 16 : dtype.endsWith('32') ? 32 : 64;
  return dtype.startsWith('u') ? BigInt.asUintN(bits, v) : BigInt.asIntN(bits, v);
}

t.test('integer types: every op, with wrap-around on overflow', async (t) => {
  for (const [dtype, Ctor, min, max] of INTS) {
    const r = rng(dtype.length);
    const edge = [min, max, 0, 1, -1, min + 1, max - 1].map((v) => wrapInt(dtype, v));
    const a = [...edge, ...Array.from({ length: 200 }, () => wrapInt(dtype, Math.floor((r() - 0.5) * 2 * (max - min))))];
    const b = [...edge.slice().reverse(), ...Array.from({ length: 200 }, () => wrapInt(dtype, Math.floor((r() - 0.5) * 2 * (max - min))))];
    for (const op of ['sum', 'prod', 'min', 'max'] as ReduceOp[]) {
      const dst = Ctor.from(a);
      addon.reduceInto(DTYPE_CODES[dtype], REDUCE_OP_CODES[op], dst, Ctor.from(b));
      const bad = a.findIndex((x, i) => dst[i] !== intRef(dtype, op, x, b[i]));
      t.equal(bad, -1, `${dtype} ${op}${bad >= 0 ? `: ${a[bad]} ${op} ${b[bad]} gave ${dst[bad]}` : ''}`);
    }
    // avg = wrapped sum, then truncating division by the peer count (done once by the chunk's owner)
    const dst = Ctor.from([7, -7, 5].map((v) => wrapInt(dtype, v)));
    addon.finishAverage(DTYPE_CODES[dtype], dst, 2);
    t.same(Array.from(dst), [7, -7, 5].map((v) => Math.trunc(wrapInt(dtype, v) / 2)), `${dtype} avg truncates toward zero`);
  }
});

t.test('64-bit integers wrap too', async (t) => {
  const a = BigInt64Array.from([2n ** 63n - 1n, -(2n ** 63n), 5n, -3n]);
  const b = BigInt64Array.from([1n, -1n, 7n, 2n]);
  const s = BigInt64Array.from(a);
  addon.reduceInto(DTYPE_CODES.int64, REDUCE_OP_CODES.sum, s, b);
  t.same(Array.from(s), [-(2n ** 63n), 2n ** 63n - 1n, 12n, -1n], 'int64 sum wraps');
  const p = BigUint64Array.from([2n ** 63n, 3n]);
  addon.reduceInto(DTYPE_CODES.uint64, REDUCE_OP_CODES.prod, p, BigUint64Array.from([2n, 5n]));
  t.same(Array.from(p), [0n, 15n], 'uint64 prod wraps');
  const m = BigUint64Array.from([2n ** 64n - 1n, 0n]);
  addon.reduceInto(DTYPE_CODES.uint64, REDUCE_OP_CODES.min, m, BigUint64Array.from([1n, 2n ** 64n - 1n]));
  t.same(Array.from(m), [1n, 0n], 'uint64 min is unsigned');
});

const SPECIALS = [0, -0, 1, -1, 0.5, 1e30, -1e30, Infinity, -Infinity, NaN, 3.25, -2.75];

function floatOp(op: ReduceOp, a: number, b: number): number {
  switch (op) {
    case 'sum': case 'avg': return a + b;
    case 'prod': return a * b;
    // min/max are order independent: NaN wins, and -0 < +0
    case 'min': return Number.isNaN(a) || Number.isNaN(b) ? NaN : a === b && a === 0 ? (Object.is(a, -0) || Object.is(b, -0) ? -0 : 0) : Math.min(a, b);
    case 'max': return Number.isNaN(a) || Number.isNaN(b) ? NaN : a === b && a === 0 ? (Object.is(a, 0) || Object.is(b, 0) ? 0 : -0) : Math.max(a, b);
  }
}

function sameFloat(a: number, b: number): boolean {
  return Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b));
}

t.test('float32 and float64: every op including NaN, Inf and -0; min/max do not depend on operand order', async (t) => {
  for (const [dtype, Ctor, round] of [['float32', Float32Array, Math.fround], ['float64', Float64Array, (x: number) => x]] as const) {
    for (const op of ['sum', 'prod', 'min', 'max'] as ReduceOp[]) {
      const a: number[] = [], b: number[] = [];
      for (const x of SPECIALS) for (const y of SPECIALS) { a.push(x); b.push(y); }
      const dst = (Ctor as any).from(a);
      addon.reduceInto(DTYPE_CODES[dtype], REDUCE_OP_CODES[op], dst, (Ctor as any).from(b));
      const bad = a.findIndex((x, i) => !sameFloat(dst[i], round(floatOp(op, round(x), round(b[i])))));
      t.equal(bad, -1, `${dtype} ${op}${bad >= 0 ? `: ${a[bad]} ${op} ${b[bad]} gave ${dst[bad]}` : ''}`);
      if (op === 'min' || op === 'max') {
        const swapped = (Ctor as any).from(b);
        addon.reduceInto(DTYPE_CODES[dtype], REDUCE_OP_CODES[op], swapped, (Ctor as any).from(a));
        t.ok(Buffer.from(swapped.buffer).equals(Buffer.from(dst.buffer)), `${dtype} ${op}: same bits in either order`);
      }
    }
    const avg = (Ctor as any).from([3, -1, 1, NaN]);
    addon.finishAverage(DTYPE_CODES[dtype], avg, 4);
    t.ok(sameFloat(avg[0], 0.75) && sameFloat(avg[1], -0.25) && Number.isNaN(avg[3]), `${dtype} avg divides once`);
  }
});

t.test('float16 and bfloat16 (Uint16Array bit patterns) round to nearest-even after each operation', async (t) => {
  const codecs = [
    ['float16', floatToHalfBits, halfBitsToFloat],
    ['bfloat16', floatToBf16Bits, bf16BitsToFloat],
  ] as const;
  for (const [dtype, enc, dec] of codecs) {
    const values = [0, -0, 1, -1, 0.5, 2.5, 1000, -3.75, Infinity, -Infinity, NaN, 0.1, 65504, 1e-5];
    for (const op of ['sum', 'prod', 'min', 'max'] as ReduceOp[]) {
      const a: number[] = [], b: number[] = [];
      for (const x of values) for (const y of values) { a.push(enc(x)); b.push(enc(y)); }
      const dst = Uint16Array.from(a);
      addon.reduceInto(DTYPE_CODES[dtype], REDUCE_OP_CODES[op], dst, Uint16Array.from(b));
      const bad = a.findIndex((x, i) => {
        const want = dec(enc(Math.fround(floatOp(op, dec(x), dec(b[i])))));
        return !sameFloat(dec(dst[i]), want);
      });
      t.equal(bad, -1, `${dtype} ${op}${bad >= 0 ? `: ${dec(a[bad])} ${op} ${dec(b[bad])} gave ${dec(dst[bad])}` : ''}`);
    }
  }
});

t.test('kernels reject mismatched buffers with a clear error', async (t) => {
  t.throws(() => addon.reduceInto(DTYPE_CODES.float32, 0, new Float32Array(4), new Float32Array(3)), /same size/);
  t.throws(() => addon.reduceInto(99, 0, new Float32Array(4), new Float32Array(4)), /dtype/);
});
