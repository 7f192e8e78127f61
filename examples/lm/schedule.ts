/**
 * What examples/lm/train.ts and bench/lm/tune.ts share so that a setting tuned in one transfers to the other: the
 * inner learning-rate schedule and the loss on a split of the text (validation or held-out).
 */
import * as tf from '@tensorflow/tfjs';
import type { CharTransformer } from './model';
import { rng } from './data';

export interface LrSchedule {
  /** Peak learning rate. */
  lr: number;
  /** 'constant', or 'cosine': linear warm-up over `warmup` steps, then a cosine from lr down to lr * minRatio at `total`. */
  kind: 'constant' | 'cosine';
  warmup: number;
  minRatio: number;
  /** Inner steps of the whole run (the cosine ends there). */
  total: number;
}

/** Learning rate of inner step `step` (1-based); the same for data parallel and every DiLoCo worker. */
export function lrAt(s: LrSchedule, step: number): number {
  if (s.kind === 'constant') return s.lr;
  if (step <= s.warmup) return (s.lr * step) / Math.max(1, s.warmup);
  const p = Math.min(1, (step - s.warmup) / Math.max(1, s.total - s.warmup));
  return s.lr * (s.minRatio + (1 - s.minRatio) * 0.5 * (1 + Math.cos(Math.PI * p)));
}

/**
 * Mean cross-entropy (nats per character) over `count` fixed windows of `data` (the same windows on every worker
 * and in every run, so rows compare on the same text).
 */
export function evaluate(model: CharTransformer, data: Uint8Array, count: number, context: number): number {
  const r = rng(424242);
  const per = 16;
  let total = 0;
  let n = 0;
  for (let done = 0; done < count; done += per) {
    const b = Math.min(per, count - done);
    const x = new Int32Array(b * context);
    const y = new Int32Array(b * context);
    for (let i = 0; i < b; i++) {
      const o = Math.floor(r() * (data.length - context - 1));
      for (let t = 0; t < context; t++) {
        x[i * context + t] = data[o + t];
        y[i * context + t] = data[o + t + 1];
      }
    }
    total += tf.tidy(() => model.loss(tf.tensor2d(x, [b, context], 'int32'), tf.tensor2d(y, [b, context], 'int32')).dataSync()[0]) * b;
    n += b;
  }
  return total / n;
}
