/**
 * A small MLP classifier (784 -> hidden ReLU -> 10 softmax) on Float32Array parameters, with Adam, written by
 * hand so that training is fast on a CPU without native add-ons (see README: @tensorflow/tfjs with its pure-JS
 * backend installs offline but trained this model about 15 times slower: 19.5 ms vs 1.3 ms per batch of 32).
 * It exploits the sparsity of MNIST pixels (about 80% are 0) in both passes. All arithmetic is deterministic, so
 * peers that start from the same parameters and see the same averaged updates stay bit-identical.
 */
import { mulberry32 } from '../../lib/random';

export const INPUTS = 784;
export const CLASSES = 10;

/** A deterministic PRNG (mulberry32): same seed, same numbers on every machine. */
export const rng = mulberry32;

export class Mlp {
  /** All parameters in one buffer: W1 (INPUTS x hidden, row per input), b1, W2 (hidden x CLASSES), b2. */
  readonly params: Float32Array;
  readonly grads: Float32Array;
  readonly W1: Float32Array;
  readonly b1: Float32Array;
  readonly W2: Float32Array;
  readonly b2: Float32Array;
  private gW1: Float32Array;
  private gb1: Float32Array;
  private gW2: Float32Array;
  private gb2: Float32Array;
  private h: Float32Array;
  private dh: Float32Array;
  private o = new Float32Array(CLASSES);

  constructor(readonly hidden: number, seed = 1) {
    const H = hidden;
    const sizes = [INPUTS * H, H, H * CLASSES, CLASSES];
    const n = sizes.reduce((a, b) => a + b, 0);
    this.params = new Float32Array(n);
    this.grads = new Float32Array(n);
    const views = (buf: Float32Array) => {
      let o = 0;
      return sizes.map((s) => buf.subarray(o, (o += s)));
    };
    [this.W1, this.b1, this.W2, this.b2] = views(this.params);
    [this.gW1, this.gb1, this.gW2, this.gb2] = views(this.grads);
    const r = rng(seed);
    const a1 = Math.sqrt(6 / INPUTS);
    const a2 = Math.sqrt(6 / H);
    for (let i = 0; i < this.W1.length; i++) this.W1[i] = (r() * 2 - 1) * a1;
    for (let i = 0; i < this.W2.length; i++) this.W2[i] = (r() * 2 - 1) * a2;
    this.h = new Float32Array(H);
    this.dh = new Float32Array(H);
  }

  /**
   * The parameters as named tensor views, W1 cut into `w1Blocks` row blocks so that Streaming DiLoCo can make
   * fragments of about equal size.
   */
  tensors(w1Blocks = 8): Record<string, Float32Array> {
    const out: Record<string, Float32Array> = {};
    const H = this.hidden;
    for (let b = 0; b < w1Blocks; b++) {
      const r0 = Math.floor((b * INPUTS) / w1Blocks);
      const r1 = Math.floor(((b + 1) * INPUTS) / w1Blocks);
      out[`W1.${b}`] = this.W1.subarray(r0 * H, r1 * H);
    }
    out.b1 = this.b1;
    out.W2 = this.W2;
    out.b2 = this.b2;
    return out;
  }

  /** Forward one sample into this.o (probabilities); returns them. */
  private forward(x: Float32Array, off: number): Float32Array {
    const H = this.hidden;
    const { h, W1, W2, b1, b2, o } = this;
    h.set(b1);
    for (let i = 0; i < INPUTS; i++) {
      const xi = x[off + i];
      if (xi === 0) continue;
      const r = i * H;
      for (let j = 0; j < H; j++) h[j] += xi * W1[r + j];
    }
    for (let j = 0; j < H; j++) if (h[j] < 0) h[j] = 0;
    let m = -Infinity;
    for (let c = 0; c < CLASSES; c++) {
      let z = b2[c];
      for (let j = 0; j < H; j++) z += h[j] * W2[j * CLASSES + c];
      o[c] = z;
      if (z > m) m = z;
    }
    let s = 0;
    for (let c = 0; c < CLASSES; c++) s += o[c] = Math.exp(o[c] - m);
    for (let c = 0; c < CLASSES; c++) o[c] /= s;
    return o;
  }

  /** Mean cross-entropy gradient of a batch into `grads`; returns the mean loss. */
  gradient(x: Float32Array, y: Uint8Array, indices: ArrayLike<number>): number {
    const H = this.hidden;
    const { h, dh, W2, gW1, gb1, gW2, gb2 } = this;
    this.grads.fill(0);
    const B = indices.length;
    let loss = 0;
    for (let k = 0; k < B; k++) {
      const s = indices[k];
      const off = s * INPUTS;
      const o = this.forward(x, off);
      const label = y[s];
      loss -= Math.log(o[label] + 1e-12);
      o[label] -= 1;
      for (let c = 0; c < CLASSES; c++) gb2[c] += o[c] / B;
      for (let j = 0; j < H; j++) {
        const hv = h[j];
        let acc = 0;
        for (let c = 0; c < CLASSES; c++) {
          const d = o[c] / B;
          gW2[j * CLASSES + c] += hv * d;
          acc += W2[j * CLASSES + c] * d;
        }
        dh[j] = hv > 0 ? acc : 0;
        gb1[j] += dh[j];
      }
      for (let i = 0; i < INPUTS; i++) {
        const xi = x[off + i];
        if (xi === 0) continue;
        const r = i * H;
        for (let j = 0; j < H; j++) gW1[r + j] += xi * dh[j];
      }
    }
    return loss / B;
  }

  /** Accuracy and mean loss on a data set. */
  evaluate(x: Float32Array, y: Uint8Array): { accuracy: number; loss: number } {
    const n = y.length;
    let right = 0;
    let loss = 0;
    for (let s = 0; s < n; s++) {
      const o = this.forward(x, s * INPUTS);
      let best = 0;
      for (let c = 1; c < CLASSES; c++) if (o[c] > o[best]) best = c;
      if (best === y[s]) right++;
      loss -= Math.log(o[y[s]] + 1e-12);
    }
    return { accuracy: right / n, loss: loss / n };
  }
}

/** Adam on a flat parameter buffer (the inner optimizer). */
export class Adam {
  private m: Float32Array;
  private v: Float32Array;
  private t = 0;
  constructor(
    private readonly params: Float32Array,
    public lr = 1e-3,
    private readonly b1 = 0.9,
    private readonly b2 = 0.999,
    private readonly eps = 1e-8,
  ) {
    this.m = new Float32Array(params.length);
    this.v = new Float32Array(params.length);
  }
  step(g: Float32Array): void {
    this.t++;
    const { m, v, b1, b2, eps, params } = this;
    const c1 = 1 - Math.pow(b1, this.t);
    const c2 = 1 - Math.pow(b2, this.t);
    const a = this.lr * Math.sqrt(c2) / c1;
    for (let i = 0; i < params.length; i++) {
      const gi = g[i];
      m[i] = b1 * m[i] + (1 - b1) * gi;
      v[i] = b2 * v[i] + (1 - b2) * gi * gi;
      params[i] -= (a * m[i]) / (Math.sqrt(v[i]) + eps);
    }
  }
}
