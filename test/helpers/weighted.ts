// The weighted average a group should compute, written from the definition (test/unit/weighted.test.ts and the
// real-process test check lib/weighted.ts against it).
import type { DType } from '../../lib/dtype';
import { toBF16, toF16 } from './half';

const f = Math.fround;

/** The weighted average of `inputs` (decoded values) with `weights`, summed in peer order, in the reference's arithmetic. */
export function reference(dtype: DType, inputs: number[][], weights: number[]): number[] {
  const n = inputs[0].length;
  const acc = dtype === 'float64' ? (x: number) => x : f;
  const ws = weights.map((w) => acc(w));
  let total = 0;
  for (const w of ws) total = acc(total + w);
  return Array.from({ length: n }, (_, i) => {
    let s = 0;
    inputs.forEach((x, p) => (s = acc(s + acc(ws[p] * x[i]))));
    const q = acc(s / total);
    return dtype === 'float16' ? toF16(q) : dtype === 'bfloat16' ? toBF16(q) : q;
  });
}

