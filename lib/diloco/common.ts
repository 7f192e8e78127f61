/** Pieces shared by DiLoCo and StreamingDiLoCo: retrying collectives, gathering tensors, state bookkeeping. */
import type { QuantizationOptions } from '../engine';
import type { NamedTensor } from './fragments';
import type { Collective, CommStats, StateBinding, SyncStrategy } from './types';
import { checkInt, checkKeys, checkOneOf, describeValue } from './validate';

/** Copies the tensors, in order, into one flat buffer. */
export function gather(tensors: readonly NamedTensor[], out: Float32Array): void {
  let o = 0;
  for (const t of tensors) {
    out.set(t.data, o);
    o += t.data.length;
  }
}

/** Copies a flat buffer back into the tensors. */
export function scatter(flat: Float32Array, tensors: readonly NamedTensor[]): void {
  let o = 0;
  for (const t of tensors) {
    t.data.set(flat.subarray(o, o + t.data.length));
    o += t.data.length;
  }
}

/** delta = outer - local (flattened local tensors). */
export function pseudoGradient(outer: Float32Array, tensors: readonly NamedTensor[], delta: Float32Array): void {
  let o = 0;
  for (const t of tensors) {
    const d = t.data;
    for (let i = 0; i < d.length; i++, o++) delta[o] = outer[o] - d[i];
  }
}

/** local = alpha * local + (1 - alpha) * outer, tensor by tensor. */
export function mixInto(tensors: readonly NamedTensor[], outer: Float32Array, alpha: number): void {
  const beta = 1 - alpha;
  let o = 0;
  for (const t of tensors) {
    const d = t.data;
    for (let i = 0; i < d.length; i++, o++) d[i] = alpha * d[i] + beta * outer[o];
  }
}

export function emptyStats(): CommStats {
  return { bytesSent: 0, bytesReceived: 0, allReduces: 0, retries: 0, peakBytesPerSync: 0 };
}

/** Validates quantization options here too, so a bad codec fails at construction, not at the first outer step. */
export function checkQuantization(q: unknown): QuantizationOptions | undefined {
  if (q === undefined) return undefined;
  if (q === null || typeof q !== 'object') {
    throw new TypeError(`DiLoCo option "quantization" must be an object like { codec: 'uint8' }, got ${describeValue(q)}`);
  }
  checkKeys('quantization', q, ['codec', 'blockSize', 'stochastic', 'seed']);
  const o = q as QuantizationOptions;
  checkOneOf('quantization.codec', o.codec, ['uint8', 'uint4', 'float16', 'bfloat16'] as const);
  if (o.blockSize !== undefined) checkInt('quantization.blockSize', o.blockSize, 2, 1 << 20);
  return { ...o };
}

/** Options about churn handling common to every optimizer. */
export interface ResilienceOptions {
  /** Retries of one all-reduce or sync after a retryable error (default 16). */
  maxRetries?: number;
  /** First tag this optimizer uses; it uses tags [tagBase, tagBase + 2 * fragments + 2) (default 1000). */
  tagBase?: number;
}

/** Wraps a collective with retries on retryable errors (a lost peer): re-form the group, try again. */
export class Retrying<S> {
  constructor(
    readonly comm: Collective<S>,
    readonly stats: CommStats,
    readonly maxRetries: number,
    readonly quantization: QuantizationOptions | undefined,
  ) {}

  /** Average of `buf` over the group, in place. Alone in the group, `buf` is the average and nothing is sent. */
  async average(buf: Float32Array, tag: number): Promise<number> {
    for (let attempt = 0; ; attempt++) {
      if (this.comm.worldSize < 2) return 1;
      try {
        const r = await this.comm.allReduce(buf, { op: 'avg', tag, ...(this.quantization ? { quantization: this.quantization } : {}) });
        this.stats.bytesSent += r.bytesSent;
        this.stats.bytesReceived += r.bytesReceived;
        this.stats.allReduces++;
        this.stats.peakBytesPerSync = Math.max(this.stats.peakBytesPerSync, r.bytesSent);
        if (r.data !== buf) buf.set(r.data);
        return r.worldSize;
      } catch (err) {
        if (!isRetryable(err) || attempt >= this.maxRetries) throw err;
        this.stats.retries++;
        await this.comm.updateTopology();
      }
    }
  }

  /** Admits pending peers, then syncs the state (retrying after a lost peer). */
  async syncState(binding: StateBinding<S>, strategy: SyncStrategy): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        if (await this.comm.arePeersPending()) await this.comm.updateTopology();
        const r = await this.comm.syncSharedState(binding.state, { strategy });
        if (r) {
          this.stats.bytesSent += r.bytesSent ?? 0;
          this.stats.bytesReceived += r.bytesReceived ?? 0;
        }
        return;
      } catch (err) {
        if (!isRetryable(err) || attempt >= this.maxRetries) throw err;
        this.stats.retries++;
        await this.comm.updateTopology();
      }
    }
  }
}

export function isRetryable(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { retryable?: unknown }).retryable === true;
}

export function resilience(o: ResilienceOptions): { maxRetries: number; tagBase: number } {
  return {
    maxRetries: checkInt('maxRetries', o.maxRetries ?? 16, 0, 1_000_000),
    tagBase: checkInt('tagBase', o.tagBase ?? 1000, 0, 2 ** 40),
  };
}
