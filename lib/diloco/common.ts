/** Pieces shared by DiLoCo and StreamingDiLoCo: retrying collectives, gathering tensors, state bookkeeping. */
import type { QuantizationOptions } from '../collective';
import type { NamedTensor } from './fragments';
import type { Collective, CommStats, StateBinding, SyncStrategy } from './types';
import { checkInt, checkKeys, checkOneOf, describeValue } from '../validate';

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
/** The checks both optimizers start with: a Communicator-like first argument and an options object of known keys. */
export function checkConstructorArgs(what: string, comm: unknown, options: unknown, keys: readonly string[]): void {
  if (comm === null || typeof comm !== 'object' || typeof (comm as Collective<unknown>).allReduce !== 'function') {
    throw new TypeError(`${what}: the first argument must be a Communicator, got ${describeValue(comm)}`);
  }
  if (options === null || typeof options !== 'object') throw new TypeError(`${what}: options must be an object with at least { params }`);
  checkKeys(what, options, keys);
}

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

  /**
   * Average of `buf` over the group, in place (a group of one returns its input), weighted by `weight` when given.
   * A retryable failure (a lost peer) is retried from the same input once the group has re-formed, which the
   * communicator does by itself; a weighted retry reweights over the survivors.
   */
  async average(buf: Float32Array, tag: number, weight?: number): Promise<number> {
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await this.comm.allReduce(buf, {
          op: 'avg', tag, ...(this.quantization ? { quantization: this.quantization } : {}), ...(weight !== undefined ? { weight } : {}),
        });
        this.count(r.bytesSent, r.bytesReceived);
        this.stats.allReduces++;
        this.stats.peakBytesPerSync = Math.max(this.stats.peakBytesPerSync, r.bytesSent);
        if (r.data !== buf) buf.set(r.data);
        return r.worldSize;
      } catch (err) {
        if (!isRetryable(err) || attempt >= this.maxRetries) throw err;
        this.stats.retries++;
      }
    }
  }

  private count(sent: number | undefined, received: number | undefined): void {
    this.stats.bytesSent += sent ?? 0;
    this.stats.bytesReceived += received ?? 0;
  }

  /**
   * Admits pending peers (updateTopology is a group-wide barrier, called at every sync so that all peers take
   * the same decision), then syncs the state, retrying after a lost peer. Without `syncSharedState` on the
   * communicator it falls back to {@link syncByAllReduce}.
   */
  async syncState(binding: StateBinding<S>, strategy: SyncStrategy, stateTag: number, vote = true): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        if (vote) await this.comm.updateTopology();
        if (typeof this.comm.syncSharedState === 'function') {
          const r = await this.comm.syncSharedState(binding.state, { strategy });
          if (r) this.count(r.bytesSent, r.bytesReceived);
        } else {
          const r = await syncByAllReduce(this.comm, binding, strategy, stateTag);
          this.count(r.bytesSent, r.bytesReceived);
        }
        return;
      } catch (err) {
        if (!isRetryable(err) || attempt >= this.maxRetries) throw err;
        this.stats.retries++;
      }
    }
  }
}

/**
 * Shared-state sync over plain all-reduces, for communicators without `syncSharedState`:
 * 1. max-reduce [revision] over the peers that offer their state;
 * 2. max-reduce [someone-behind, ticket]: a peer is behind when it offers nothing (receiveOnly) or holds an older
 *    revision; each up-to-date peer draws a random ticket and the largest elects the source;
 * 3. only when someone is behind: sum-reduce the state, where only the source contributes (x + 0 is exact, so
 *    every peer receives the source's bits).
 * Up-to-date peers pay two one-float messages. It trusts that peers at the same revision agree (they apply
 * identical steps); the real shared state (issue 4) also verifies content hashes.
 */
export async function syncByAllReduce<S>(
  comm: Collective<S>,
  binding: StateBinding<S>,
  strategy: SyncStrategy,
  tag: number,
): Promise<{ bytesSent: number; bytesReceived: number }> {
  let sent = 0;
  let received = 0;
  const ar = async (data: Float32Array, op: 'max' | 'sum') => {
    const r = await comm.allReduce(data, { op, tag } as never);
    sent += r.bytesSent;
    received += r.bytesReceived;
  };
  const offers = strategy !== 'receiveOnly';
  const rev = new Float32Array([offers ? binding.revision : -1]);
  await ar(rev, 'max');
  const revision = rev[0];
  if (revision < 0) throw new TypeError('Shared-state sync: no peer offers its state (every peer used receiveOnly)');
  const upToDate = offers && binding.revision === revision;
  const ticket = upToDate ? 1 + Math.floor(Math.random() * (1 << 23)) : 0;
  const flags = new Float32Array([upToDate ? 0 : 1, ticket]);
  await ar(flags, 'max');
  if (flags[0] === 0) return { bytesSent: sent, bytesReceived: received };
  const source = upToDate && flags[1] === ticket;
  const entries = binding.entries();
  const keys = Object.keys(entries).sort();
  const flat = new Float32Array(keys.reduce((n, k) => n + entries[k].length, 0));
  let o = 0;
  if (source) for (const k of keys) (flat.set(entries[k], o), (o += entries[k].length));
  await ar(flat, 'sum');
  o = 0;
  for (const k of keys) (entries[k].set(flat.subarray(o, o + entries[k].length)), (o += entries[k].length));
  binding.revision = revision;
  return { bytesSent: sent, bytesReceived: received };
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

/**
 * A training loop is synchronous from one inner step to the next: without a turn of the event loop no timer or
 * socket callback runs, so heartbeats stop (the master drops the worker as frozen) and an all-reduce meant to
 * overlap the inner steps (async and Streaming DiLoCo) makes no progress. The optimizers' step() yields once.
 */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
