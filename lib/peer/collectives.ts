/**
 * Collective operations through the master: the data plane computes, the master confirms. A result is released
 * to the caller only once every member of the group finished the same operation (`opCommit`); until then an
 * in-place result lives in a scratch array, so a failure anywhere leaves every caller's input as it was.
 * `allReduceMany` retries failed operations after the group re-forms.
 */
import { native } from '../binding';
import type { AllReduceOptions, AllReduceResult } from '../collective';
import { TensorArray, resolveDType, resolveReduceOp } from '../dtype';
import { AbortError, PeerLostError, TcclError, TooFewPeersError, errorFromCode } from '../errors';
import { MAX_RESUME_KEYS, Msg } from '../protocol';
import { checkInt } from '../validate';
import { checkWeighted } from '../weighted';
import type { PeerContext } from './context';
import type { Membership } from './membership';
import { monotonicMs } from '../clock';

/** What an all-reduce through the communicator reports. */
export interface CommunicatorAllReduceResult<T extends TensorArray = TensorArray> extends AllReduceResult<T> {
  /** The group epoch the result was computed in. */
  epoch: number;
}

/** One entry of allReduceMany: an array (reduced in place) or an array with its own options. */
export type ManyItem<T extends TensorArray = TensorArray> = T | ({ data: T } & Omit<AllReduceOptions<T>, 'signal' | 'timeoutMs'>);

export interface AllReduceManyOptions extends Omit<AllReduceOptions, 'output' | 'tag'> {
  /** Operations in flight at once (default 4). */
  maxInFlight?: number;
  /** Item i gets tag `tagBase + i` unless it gives its own (default 0). */
  tagBase?: number;
  /** Gives up retrying after this long in total, ms (default 300000; 0 = never). */
  retryTimeoutMs?: number;
}

export interface CollectivesHost extends PeerContext {
  readonly membership: Membership;
  /** How long a re-form may take before a retry gives up waiting for it (twice the peer timeout). */
  reformWaitMs(): number;
}

interface OpWaiter {
  epoch: number;
  resolve: () => void;
  reject: (e: Error) => void;
}

const MAX_TIMEOUT_MS = 2 ** 31 - 1;
/** Large copies run on a native worker thread so they never stall the event loop; small ones inline. */
const INLINE_COPY_BYTES = 256 * 1024;
/** Scratch arrays kept per shape. */
const SCRATCH_PER_SHAPE = 2;

export class Collectives {
  /** Per tag: operations started with it in the current epoch (the key's sequence number). */
  private tagUses = new Map<number, number>();
  private readonly waiters = new Map<string, OpWaiter>();
  /** Aborts the master announced before this peer finished the operation. */
  private earlyAborts = new Map<string, { code: string; message: string }>();
  /** In-flight data-plane operations by key: the tag to abort when the master aborts the key. */
  private readonly running = new Map<string, number>();
  private readonly scratch = new Map<string, TensorArray[]>();
  /** Operations of the current epoch whose commit arrived (the newest ones), for a master rebuilt after a restart. */
  private committed: string[] = [];

  constructor(private readonly host: CollectivesHost) {
    host.membership.onNewEpoch((epoch, old) => {
      this.tagUses = new Map();
      this.committed = [];
      this.earlyAborts = new Map();
      for (const [key, w] of [...this.waiters]) {
        if (w.epoch < epoch) {
          this.waiters.delete(key);
          w.reject(host.membership.superseded(old));
        }
      }
    });
  }

  /** Handles `opCommit` and `opAbort`. */
  onMessage(m: Msg<'opCommit' | 'opAbort'>): void {
    const membership = this.host.membership;
    if (m.t === 'opCommit') {
      const w = this.waiters.get(m.key);
      if (m.epoch === membership.epoch) {
        this.committed.push(m.key);
        if (this.committed.length > MAX_RESUME_KEYS) this.committed.shift();
      }
      if (w && w.epoch === m.epoch) {
        this.waiters.delete(m.key);
        w.resolve();
      }
      return;
    }
    if (m.epoch !== membership.epoch) return;
    const w = this.waiters.get(m.key);
    if (w && w.epoch === m.epoch) {
      this.waiters.delete(m.key);
      w.reject(errorFromCode(m.code, m.message));
      return;
    }
    this.earlyAborts.set(m.key, { code: m.code, message: m.message });
    // The data-plane part may still wait for a peer that has given the operation up: end it now rather than at
    // its deadline.
    const tag = this.running.get(m.key);
    if (tag !== undefined) this.host.dataPlane.abort(tag, m.message);
  }

  /**
   * What this peer tells a master that does not know its session: the commits it saw in its epoch. A commit the
   * old master sent only some members before it died is then sent to the others (every member had finished it).
   */
  report(): { committed: string[] } {
    return { committed: [...this.committed] };
  }

  /** After a reconnect: operations waiting for their commit report again (the master ignores repeats). */
  resend(): void {
    for (const [key, w] of this.waiters) if (w.epoch === this.host.membership.epoch) this.host.send({ t: 'done', epoch: w.epoch, key });
  }

  failAll(err: Error): void {
    for (const w of this.waiters.values()) w.reject(err);
    this.waiters.clear();
  }

  /** One all-reduce, committed through the master (see Communicator.allReduce). */
  async allReduce<T extends TensorArray>(data: T, options: AllReduceOptions<T>): Promise<CommunicatorAllReduceResult<T>> {
    const { membership } = this.host;
    this.checkUsable();
    const dtype = resolveDType(data, options.dtype);
    resolveReduceOp(options.op);
    // Checked here too, so that bad input fails before the master hears of the operation.
    if (options.weight !== undefined) checkWeighted(options.weight, options.op, dtype, options.quantization !== undefined);
    const tag = checkInt('tag', options.tag ?? 0, 0);
    const timeoutMs = checkInt('timeoutMs', options.timeoutMs ?? 30_000, 0, MAX_TIMEOUT_MS);
    if (options.output !== undefined) resolveDType(options.output, dtype, 'output');
    const signal = options.signal;
    if (signal?.aborted) throw new AbortError(`All-reduce (tag ${tag}) aborted before it started`, { cause: signal.reason });
    const deadline = timeoutMs === 0 ? Infinity : monotonicMs() + timeoutMs;
    // The epoch must still be ready when the operation starts, not only when the wait ended: a newer ring may
    // have arrived in between.
    do await membership.waitReady(membership.epoch, deadline, 'waiting for the group to form', signal);
    while (!membership.isReady(membership.epoch));
    const epoch = membership.epoch;
    const seq = this.tagUses.get(tag) ?? 0;
    this.tagUses.set(tag, seq + 1);
    const key = `${tag}.${seq}`;
    const inPlace = options.output === undefined || options.output === data;
    // The engine reduces into a scratch array; the caller's array changes only once every member has the result.
    const out = (inPlace ? this.takeScratch(data) : options.output) as T;
    try {
      let r: AllReduceResult<T>;
      this.running.set(key, tag);
      const t0 = performance.now();
      try {
        r = await this.host.dataPlane.allReduce(data, { ...options, output: out, tag, timeoutMs });
      } catch (err) {
        this.host.stats.opsFailed++;
        throw this.opFailed(err as Error, epoch, key);
      } finally {
        this.running.delete(key);
      }
      const us = Math.round((performance.now() - t0) * 1000);
      const early = this.earlyAborts.get(key);
      if (early && epoch === membership.epoch) throw errorFromCode(early.code, early.message);
      if (epoch !== membership.epoch) throw membership.superseded(epoch);
      await this.waitCommit(epoch, key, signal);
      if (inPlace) await copyInto(data, out);
      const stats = this.host.stats;
      stats.allReduces++;
      stats.allReduceBytes += data.byteLength;
      stats.allReduceUs += us;
      stats.bytesSent += r.bytesSent;
      stats.bytesReceived += r.bytesReceived;
      return { data: inPlace ? data : out, worldSize: r.worldSize, bytesSent: r.bytesSent, bytesReceived: r.bytesReceived, epoch };
    } finally {
      if (inPlace) this.returnScratch(out);
    }
  }

  /**
   * Many all-reduces, up to `maxInFlight` at once, retrying failed ones after the group re-forms (see
   * Communicator.allReduceMany). `one` runs one all-reduce (the communicator's public path).
   */
  async allReduceMany<T extends TensorArray>(
    items: ManyItem<T>[],
    options: AllReduceManyOptions,
    one: (data: T, options: AllReduceOptions<T>) => Promise<CommunicatorAllReduceResult<T>>,
  ): Promise<CommunicatorAllReduceResult<T>[]> {
    if (!Array.isArray(items)) throw new TypeError('Expected "items" to be an array of TypedArrays or { data, ...options }');
    const maxInFlight = checkInt('maxInFlight', options.maxInFlight ?? 4, 1, 1024);
    const tagBase = checkInt('tagBase', options.tagBase ?? 0, 0);
    const retryTimeoutMs = checkInt('retryTimeoutMs', options.retryTimeoutMs ?? 300_000, 0, MAX_TIMEOUT_MS);
    const deadline = retryTimeoutMs === 0 ? Infinity : monotonicMs() + retryTimeoutMs;
    const { maxInFlight: _m, tagBase: _t, retryTimeoutMs: _r, ...common } = options;
    const results: CommunicatorAllReduceResult<T>[] = new Array(items.length);
    let next = 0;
    let firstError: Error | undefined;
    const worker = async () => {
      while (firstError === undefined && next < items.length) {
        const i = next++;
        const item = items[i];
        const own = ArrayBuffer.isView(item) ? { data: item as T } : (item as { data: T } & AllReduceOptions<T>);
        if (typeof own !== 'object' || own === null || !ArrayBuffer.isView(own.data)) {
          throw new TypeError(`Expected item ${i} to be a TypedArray or { data, ...options }`);
        }
        const { data, ...itemOpts } = own;
        const opts = { ...common, ...itemOpts, tag: itemOpts.tag ?? tagBase + i } as AllReduceOptions<T>;
        results[i] = await this.withRetries(() => one(data, opts), opts.tag!, deadline, () => firstError !== undefined);
      }
    };
    const workers = Array.from({ length: Math.min(maxInFlight, items.length) }, () =>
      worker().catch((err: Error) => {
        firstError ??= err;
      }),
    );
    await Promise.all(workers);
    if (firstError) throw firstError;
    return results;
  }

  /** Runs `op` until it succeeds, retrying retryable failures once the group has re-formed. */
  private async withRetries<R>(op: () => Promise<R>, tag: number, deadline: number, stop: () => boolean): Promise<R> {
    const { membership } = this.host;
    for (;;) {
      const epoch = membership.epoch;
      try {
        return await op();
      } catch (err) {
        if (!(err instanceof TcclError) || !err.retryable || stop() || monotonicMs() >= deadline) throw err;
        this.host.log().info('operation failed; retrying after the group re-forms', { tag, err });
        // A failure that came with a re-form (the usual case) finds the new epoch at once.
        await membership.waitNewEpoch(epoch, Math.min(deadline, monotonicMs() + this.host.reformWaitMs()));
        const size = membership.world.groupWorldSize;
        if (size < 2) {
          throw new TooFewPeersError(
            `All-reduce (tag ${tag}) failed and ${size} peer is left in group ${this.host.peerGroup}; wait for peers to join (updateTopology) or stop`,
            { cause: err },
          );
        }
      }
    }
  }

  private checkUsable(): void {
    const failure = this.host.failure();
    if (failure) throw failure;
  }

  /** Turns a data-plane failure into what the caller sees, and tells the master. */
  private opFailed(err: Error, epoch: number, key: string): Error {
    const { membership } = this.host;
    const failure = this.host.failure();
    if (epoch !== membership.epoch || failure) return failure ?? membership.superseded(epoch, 'All-reduce', err);
    const e = err as TcclError & { peer?: string };
    if (e instanceof PeerLostError && e.peer) {
      this.host.log().warn('lost a peer during an operation; reporting it', { lost: e.peer, op: key, err: e });
      this.host.send({ t: 'lost', epoch, peer: String(e.peer).slice(0, 300), message: e.message.slice(0, 4000) });
    } else if (!this.earlyAborts.has(key)) {
      const code = typeof e.code === 'string' ? e.code.slice(0, 32) : 'INTERNAL';
      this.host.send({ t: 'fail', epoch, key, code, message: String(e.message).slice(0, 4000) });
    }
    const early = this.earlyAborts.get(key);
    return early ? errorFromCode(early.code, early.message, { cause: err }) : err;
  }

  private waitCommit(epoch: number, key: string, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        this.waiters.delete(key);
        this.host.send({ t: 'fail', epoch, key, code: 'ABORTED', message: 'aborted by AbortSignal' });
        reject(new AbortError(`All-reduce (${key}) aborted by AbortSignal`, { cause: signal?.reason }));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const cleanup = () => signal?.removeEventListener('abort', onAbort);
      this.waiters.set(key, {
        epoch,
        resolve: () => { cleanup(); resolve(); },
        reject: (e) => { cleanup(); reject(e); },
      });
      this.host.send({ t: 'done', epoch, key });
    });
  }

  /**
   * Scratch arrays for in-place operations, reused so that a training loop does not allocate (and page-fault)
   * a tensor-sized array per all-reduce. A few per shape are kept.
   */
  private takeScratch<T extends TensorArray>(like: T): T {
    const list = this.scratch.get(scratchKey(like));
    return (list?.pop() as T | undefined) ?? new (like.constructor as new (n: number) => T)(like.length);
  }

  private returnScratch(array: TensorArray): void {
    const key = scratchKey(array);
    const list = this.scratch.get(key) ?? [];
    if (list.length < SCRATCH_PER_SHAPE) list.push(array);
    this.scratch.set(key, list);
  }
}

function scratchKey(a: TensorArray): string {
  return `${a.constructor.name}:${a.length}`;
}

async function copyInto(dst: TensorArray, src: TensorArray): Promise<void> {
  if (dst.byteLength <= INLINE_COPY_BYTES) dst.set(src as never);
  else await native().copyAsync(dst, src);
}
