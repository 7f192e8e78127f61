// A randomized sequence of data-plane operations that every peer of a static group runs on its own, without
// waiting for the others: sizes across every algorithm's threshold, every dtype and op, in place and out of place,
// quantized, point-to-point exchange, the default tag reused one operation after another and 1-3 operations in
// flight under distinct tags. Every peer builds the same plan from the seed, checks each result against a
// reference it computes itself, and reports a digest per operation so the caller can compare peers bit for bit.
// Used by test/native/sequence.test.ts (a bounded count) and `npm run stress -- --sequence N` (a long run).
import type { Engine } from '../../lib/engine';
import type { DType, ReduceOp, TensorArray } from '../../lib/dtype';
import { arrayTypeOf, dtypeBytes } from '../../lib/dtype';
import { bf16BitsToFloat, floatToBf16Bits, floatToHalfBits, halfBitsToFloat, hashBytes, rng } from './data';

const DTYPES: DType[] = ['float32', 'float64', 'float16', 'bfloat16', 'int8', 'uint8', 'int16', 'uint16', 'int32', 'uint32', 'int64', 'uint64'];
const OPS: ReduceOp[] = ['sum', 'avg', 'prod', 'min', 'max'];
const SEGMENT_LIMIT = 64 * 1024; // the direct path's limit per peer (native/core/direct.h)

export type SequenceKind = 'auto' | 'ring' | 'direct' | 'quantized' | 'exchange';

export interface SequenceOp {
  index: number;
  kind: SequenceKind;
  tag: number;
  count: number;
  dtype: DType;
  op: ReduceOp;
  inPlace: boolean;
  /** exchange: [from, to, length in bytes] */
  streams: [number, number, number][];
}

/** The same batches on every peer: the operations of one batch are in flight together (distinct tags). */
export function makeSequence(seed: number, peers: number, operations: number, maxCount = 200_000): SequenceOp[][] {
  const r = rng(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
  const batches: SequenceOp[][] = [];
  let index = 0;
  while (index < operations) {
    const inFlight = int(0, 3) === 0 ? int(2, 3) : 1;
    const tags = [0, 1, 2, 3];
    for (let i = tags.length - 1; i > 0; i--) {
      const j = int(0, i);
      [tags[i], tags[j]] = [tags[j], tags[i]];
    }
    const batch: SequenceOp[] = [];
    for (let b = 0; b < inFlight && index < operations; b++) {
      const k = int(0, 9);
      const kind: SequenceKind = k < 5 ? 'auto' : k < 7 ? 'ring' : k < 8 ? 'direct' : k < 9 ? 'quantized' : 'exchange';
      const dtype = kind === 'quantized' ? (int(0, 1) ? 'float32' : 'bfloat16') : DTYPES[int(0, DTYPES.length - 1)];
      const op = kind === 'quantized' ? (int(0, 1) ? 'sum' : 'avg') : OPS[int(0, OPS.length - 1)];
      const directLimit = Math.floor(SEGMENT_LIMIT / dtypeBytes(dtype) / (peers === 2 ? 1 : peers - 1));
      const sizes = [int(0, 3), int(4, 512), directLimit - 3 + int(0, 6), int(513, 20_000), int(20_000, maxCount)];
      let count = Math.min(sizes[int(0, sizes.length - 1)], maxCount);
      if (kind === 'direct') count = Math.min(count, 20_000);
      const streams: [number, number, number][] = [];
      if (kind === 'exchange') {
        for (let a = 0; a < peers; a++) {
          for (let c = 0; c < peers; c++) if (a !== c && int(0, 1)) streams.push([a, c, int(0, 3) === 0 ? int(0, 10) : int(11, 300_000)]);
        }
      }
      // Mostly the default tag, one operation after another; distinct tags for operations in flight together.
      const tag = inFlight === 1 && int(0, 3) !== 0 ? 0 : tags[b];
      batch.push({ index: index++, kind, tag, count, dtype, op, inPlace: int(0, 1) === 0, streams });
    }
    batches.push(batch);
  }
  return batches;
}

/** Input element i of peer `rank` in operation j: a small integer, so every reduction is exact in every dtype. */
function inputValue(rank: number, i: number, j: number): number {
  return 1 + ((rank * 7 + i * 13 + j * 3) % 3);
}

function arrayFor(dtype: DType, count: number): TensorArray {
  return new (arrayTypeOf(dtype))(count);
}

function write(dtype: DType, a: TensorArray, i: number, v: number): void {
  if (dtype === 'float16') (a as Uint16Array)[i] = floatToHalfBits(v);
  else if (dtype === 'bfloat16') (a as Uint16Array)[i] = floatToBf16Bits(v);
  else if (dtype === 'int64' || dtype === 'uint64') (a as BigInt64Array)[i] = BigInt(v);
  else (a as Float64Array)[i] = v;
}

function read(dtype: DType, a: TensorArray, i: number): number {
  if (dtype === 'float16') return halfBitsToFloat((a as Uint16Array)[i]);
  if (dtype === 'bfloat16') return bf16BitsToFloat((a as Uint16Array)[i]);
  return Number(a[i]);
}

function expected(o: SequenceOp, peers: number, i: number): number {
  let acc = inputValue(0, i, o.index);
  for (let p = 1; p < peers; p++) {
    const x = inputValue(p, i, o.index);
    if (o.op === 'sum' || o.op === 'avg') acc += x;
    else if (o.op === 'prod') acc *= x;
    else if (o.op === 'min') acc = Math.min(acc, x);
    else acc = Math.max(acc, x);
  }
  if (o.op !== 'avg') return acc;
  return o.dtype.startsWith('float') || o.dtype === 'bfloat16' ? acc / peers : Math.trunc(acc / peers);
}

function streamBytes(from: number, to: number, length: number, j: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let k = 0; k < length; k++) out[k] = (from * 31 + to * 7 + k * 13 + j) & 0xff;
  return out;
}

export function describeOp(o: SequenceOp): string {
  return `op #${o.index} ${o.kind} tag ${o.tag} count ${o.count} ${o.dtype} ${o.op} ${o.inPlace ? 'in place' : 'out of place'}`;
}

/** Runs one operation on this peer and checks it; resolves to its digest, rejects with what was wrong. */
async function runOne(engine: Engine, o: SequenceOp, rank: number, peers: number, timeoutMs: number): Promise<string> {
  if (o.kind === 'exchange') {
    const sends = o.streams.filter(([from]) => from === rank).map(([, to, len]) => ({ to, stream: rank * 16 + to, data: streamBytes(rank, to, len, o.index) }));
    const recvs = o.streams.filter(([, to]) => to === rank).map(([from, , len]) => ({ from, stream: from * 16 + rank, data: new Uint8Array(len), len }));
    await engine.exchange({ tag: o.tag, timeoutMs, sends, recvs });
    for (const r of recvs) {
      const want = streamBytes(r.from, rank, r.len, o.index);
      const bad = want.findIndex((b, k) => r.data[k] !== b);
      if (bad >= 0) throw new Error(`stream from peer ${r.from}: byte ${bad} is ${r.data[bad]}, expected ${want[bad]}`);
    }
    return '';
  }
  const input = arrayFor(o.dtype, o.count);
  for (let i = 0; i < o.count; i++) write(o.dtype, input, i, inputValue(rank, i, o.index));
  const output = o.inPlace ? undefined : arrayFor(o.dtype, o.count);
  await engine.allReduce(input, {
    op: o.op,
    dtype: o.dtype,
    tag: o.tag,
    timeoutMs,
    output,
    algorithm: o.kind === 'ring' || o.kind === 'direct' ? o.kind : 'auto',
    quantization: o.kind === 'quantized' ? { codec: 'uint8' } : undefined,
  });
  const result = output ?? input;
  const tol = o.kind === 'quantized' ? 0.1 : o.op === 'avg' && (o.dtype.startsWith('float') || o.dtype === 'bfloat16') ? 0.02 : 0;
  for (let i = 0; i < o.count; i++) {
    const got = read(o.dtype, result, i);
    const want = expected(o, peers, i);
    if (!(Math.abs(got - want) <= tol)) throw new Error(`element ${i} is ${got}, expected ${want}`);
  }
  if (output) {
    for (let i = 0; i < o.count; i++) {
      if (read(o.dtype, input, i) !== inputValue(rank, i, o.index)) throw new Error(`the input of an out-of-place all-reduce was written at element ${i}`);
    }
  }
  return hashBytes(result);
}

export interface SequenceReport {
  /** One digest per operation, in plan order ('' for exchanges, which are checked byte by byte). */
  digests: string[];
  /** The first failure: which operation and what was wrong. */
  failure?: string;
  ms: number;
}

/** Runs the plan on this peer, batch after batch, stopping at the first failure. */
export async function runSequence(engine: Engine, plan: SequenceOp[][], rank: number, peers: number, timeoutMs = 15_000): Promise<SequenceReport> {
  const t0 = performance.now();
  const digests: string[] = [];
  for (const batch of plan) {
    const settled = await Promise.allSettled(batch.map((o) => runOne(engine, o, rank, peers, timeoutMs)));
    for (let b = 0; b < batch.length; b++) {
      const s = settled[b];
      if (s.status === 'rejected') {
        return { digests, failure: `peer ${rank}, ${describeOp(batch[b])}: ${(s.reason as Error)?.message ?? s.reason}`, ms: performance.now() - t0 };
      }
      digests.push(s.value);
    }
  }
  return { digests, ms: performance.now() - t0 };
}

/** Compares the peers' digests; returns the first difference as text, or undefined when all agree. */
export function compareDigests(plan: SequenceOp[][], reports: SequenceReport[]): string | undefined {
  const ops = plan.flat();
  for (let k = 0; k < ops.length; k++) {
    for (let p = 1; p < reports.length; p++) {
      if (reports[p].digests[k] !== reports[0].digests[k]) return `${describeOp(ops[k])}: peer ${p}'s result differs from peer 0's`;
    }
  }
  return undefined;
}
