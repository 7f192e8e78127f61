/**
 * Outer optimizers: what DiLoCo does with the averaged pseudo-gradient. They work in place on Float32Arrays and
 * compute each element with the same sequence of IEEE operations on every machine, so peers that apply the same
 * step to the same state stay bit-identical.
 */
import { checkKeys, checkNumber, checkOneOf, describeValue } from '../validate';

/** Outer optimizer settings. */
export interface OuterOptimizerOptions {
  /**
   * 'nesterov' (default): SGD with Nesterov momentum, as in the DiLoCo paper.
   * 'sgd': plain SGD (heavy-ball momentum when `momentum` > 0; default momentum 0).
   */
  type?: 'nesterov' | 'sgd';
  /** Outer learning rate (default 0.7). */
  lr?: number;
  /** Momentum (default 0.9 for nesterov, 0 for sgd). */
  momentum?: number;
}

/** A validated outer optimizer. */
export interface OuterOptimizer {
  readonly type: 'nesterov' | 'sgd';
  readonly lr: number;
  readonly momentum: number;
  /** True when the optimizer keeps a momentum buffer (one float per parameter). */
  readonly hasMomentum: boolean;
  /**
   * One outer step, in place: `params` are the outer parameters, `grad` the averaged pseudo-gradient
   * (outer - local, so it points uphill like a gradient), `momentum` the buffer (ignored without momentum).
   */
  step(params: Float32Array, grad: Float32Array, momentum?: Float32Array): void;
}

/**
 * Validates options and returns the outer optimizer.
 *
 * Update rules (g = averaged pseudo-gradient, m = momentum buffer, mu = momentum, lr = learning rate):
 * - nesterov: m = mu * m + g; params -= lr * (g + mu * m)
 * - sgd, mu > 0: m = mu * m + g; params -= lr * m
 * - sgd, mu = 0: params -= lr * g
 *
 * @example
 * ```ts
 * const opt = createOuterOptimizer({ type: 'nesterov', lr: 0.7, momentum: 0.9 });
 * opt.step(outerParams, avgPseudoGrad, momentumBuffer);
 * ```
 */
export function createOuterOptimizer(options: OuterOptimizerOptions = {}): OuterOptimizer {
  if (options === null || typeof options !== 'object') {
    throw new TypeError(`DiLoCo option "outer" must be an object like { type: 'nesterov', lr: 0.7, momentum: 0.9 }, got ${describeValue(options)}`);
  }
  checkKeys('outer optimizer', options, ['type', 'lr', 'momentum']);
  const type = checkOneOf('outer.type', options.type ?? 'nesterov', ['nesterov', 'sgd'] as const);
  const lr = checkNumber('outer.lr', options.lr ?? 0.7, 0, 1e6, true);
  const momentum = checkNumber('outer.momentum', options.momentum ?? (type === 'nesterov' ? 0.9 : 0), 0, 1);
  if (momentum === 1) throw new RangeError('DiLoCo option "outer.momentum" must be < 1 (1 never forgets and diverges), got 1');
  if (type === 'nesterov' && momentum === 0) {
    throw new RangeError('DiLoCo option "outer.momentum" must be > 0 for type "nesterov"; use type "sgd" for no momentum');
  }
  const hasMomentum = momentum > 0;
  return {
    type,
    lr,
    momentum,
    hasMomentum,
    step(params, grad, buf) {
      const n = params.length;
      if (grad.length !== n) throw new RangeError(`Outer step: gradient has ${grad.length} elements, parameters ${n}`);
      if (!hasMomentum) {
        for (let i = 0; i < n; i++) params[i] -= lr * grad[i];
        return;
      }
      if (!buf || buf.length !== n) {
        throw new RangeError(`Outer step: momentum buffer must be a Float32Array of ${n} elements, got ${describeValue(buf)}`);
      }
      if (type === 'nesterov') {
        for (let i = 0; i < n; i++) {
          const g = grad[i];
          buf[i] = momentum * buf[i] + g;
          params[i] -= lr * (g + momentum * buf[i]);
        }
      } else {
        for (let i = 0; i < n; i++) {
          buf[i] = momentum * buf[i] + grad[i];
          params[i] -= lr * buf[i];
        }
      }
    },
  };
}
