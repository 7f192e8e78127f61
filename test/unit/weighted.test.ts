// The weighted average's math (lib/weighted.ts) against references written from the definitions: every peer's
// contribution [w * x, w], their sum, and the division, exactly, for every float dtype; and the argument checks.
import t from 'tap';
import { DType } from '../../lib/dtype';
import { checkWeighted, finishWeighted, weightedContribution } from '../../lib/weighted';
import { fromBF16, fromF16, toBF16, toF16 } from '../helpers/half';
import { reference } from '../helpers/weighted';
import { finiteFloatsFromSeed } from '../helpers/data';

const f = Math.fround;

function arrays(dtype: DType, n: number, seed: number): { raw: Float32Array | Float64Array | Uint16Array; values: number[] } {
  const x = new Float32Array(n);
  finiteFloatsFromSeed(x, seed);
  for (let i = 0; i < n; i++) x[i] = f(x[i] * 1e-3); // moderate magnitudes: no overflow in w * x
  if (dtype === 'float64') {
    const raw = Float64Array.from(x, (v, i) => v + i * 1e-9);
    return { raw, values: Array.from(raw) };
  }
  if (dtype === 'float32') return { raw: x, values: Array.from(x) };
  const enc = dtype === 'float16' ? toF16 : toBF16;
  const dec = dtype === 'float16' ? fromF16 : fromBF16;
  const raw = Uint16Array.from(x, (v) => enc(v));
  return { raw, values: Array.from(raw, dec) };
}

for (const dtype of ['float32', 'float64', 'float16', 'bfloat16'] as DType[]) {
  t.test(`${dtype}: contribution, sum and division match the reference exactly`, async (t) => {
    const n = (1 << 18) + 257; // more than one slice
    const weights = [3, 1234567, 0.1, 0];
    const peers = weights.map((_, p) => arrays(dtype, n, 10 + p));
    const ext = await Promise.all(peers.map((p, i) => weightedContribution(p.raw, dtype, weights[i])));
    const sum = dtype === 'float64' ? new Float64Array(n + 1) : new Float32Array(n + 1);
    for (const e of ext) for (let i = 0; i <= n; i++) sum[i] += e[i]; // one IEEE addition each, peer order
    const out = new (peers[0].raw.constructor as new (n: number) => typeof peers[0]['raw'])(n);
    await finishWeighted(sum, dtype, out, weights.length);
    const want = reference(dtype, peers.map((p) => p.values), weights);
    const bad = want.findIndex((v, i) => !Object.is(v, out[i]));
    t.equal(bad, -1, bad < 0 ? 'every element' : `element ${bad}: got ${out[bad]}, want ${want[bad]}`);
  });
}

t.test('weights: finite and >= 0, op avg, float dtypes, no quantization; a zero total is an error', async (t) => {
  for (const w of [-1, NaN, Infinity, -Infinity, '3', null]) {
    t.throws(() => checkWeighted(w, 'avg', 'float32', false), { code: 'INVALID_ARGUMENT', message: /finite number >= 0/ }, `weight ${String(w)}`);
  }
  t.throws(() => checkWeighted(1, undefined, 'float32', false), { message: /op 'avg' only, got op "sum"/ });
  t.throws(() => checkWeighted(1, 'max', 'float32', false), { message: /op 'avg' only/ });
  t.throws(() => checkWeighted(1, 'avg', 'int32', false), { message: /float data/ });
  t.throws(() => checkWeighted(1, 'avg', 'float32', true), { message: /cannot be quantized/ });
  t.equal(checkWeighted(0, 'avg', 'float16', false), 0, 'one peer may weigh 0');
  const sum = await weightedContribution(new Float32Array([1, 2]), 'float32', 0);
  await t.rejects(finishWeighted(sum, 'float32', new Float32Array(2), 3), { code: 'INVALID_ARGUMENT', message: /total weight is 0/ });
  await t.rejects(finishWeighted(new Float32Array([1, Infinity]), 'float32', new Float32Array(1), 2), { message: /overflowed/ });
});
