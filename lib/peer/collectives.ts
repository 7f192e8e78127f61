/**
 * All-reduce through the master, as a committed operation (committed.ts): the data plane computes, the master
 * confirms. Until the commit an in-place result lives in a scratch array, so a failure anywhere leaves every
 * caller's input as it was. `allReduceMany` retries failed operations after the group re-forms.
 */
import { native } from '../binding';
import type { AllReduceOptions, AllReduceResult } from '../collective';
import { TensorArray, resolveDType, resolveReduceOp } from '../dtype';
import { checkInt } from '../validate';
import { checkWeighted } from '../weighted';
import { CommittedHost, CommittedOps } from './committed';
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

export type CollectivesHost = CommittedHost;

const MAX_TIMEOUT_MS = 2 ** 31 - 1;
/** Large copies run on a native worker thread so they never stall the event loop; small ones inline. */
const INLINE_COPY_BYTES = 256 * 1024;
/** Scratch arrays kept per shape. */
const SCRATCH_PER_SHAPE = 2;

/** All-reduce as a committed operation (committed.ts), with scratch arrays for in-place results. */
export class Collectives {
  private readonly scratch = new Map<string, TensorArray[]>();

  constructor(private readonly host: CollectivesHost, readonly ops: CommittedOps = new CommittedOps(host)) {}

  /** One all-reduce, committed through the master (see Communicator.allReduce). */
  async allReduce<T extends TensorArray>(data: T, options: AllReduceOptions<T>): Promise<CommunicatorAllReduceResult<T>> {
    const failure = this.host.failure();
    if (failure) throw failure;
    const dtype = resolveDType(data, options.dtype);
    resolveReduceOp(options.op);
    // Checked here too, so that bad input fails before the master hears of the operation.
    if (options.weight !== undefined) checkWeighted(options.weight, options.op, dtype, options.quantization !== undefined);
    const tag = checkInt('tag', options.tag ?? 0, 0);
    const timeoutMs = checkInt('timeoutMs', options.timeoutMs ?? 30_000, 0, MAX_TIMEOUT_MS);
    if (options.output !== undefined) resolveDType(options.output, dtype, 'output');
    const inPlace = options.output === undefined || options.output === data;
    let out: T | undefined;
    try {
      return await this.ops.run({
        what: 'All-reduce', tag, timeoutMs, signal: options.signal,
        compute: async () => {
          // The engine reduces into a scratch array; the caller's array changes only once every member has the result.
          out = (inPlace ? this.takeScratch(data) : options.output) as T;
          const t0 = performance.now();
          const r = await this.host.dataPlane.allReduce(data, { ...options, output: out, tag, timeoutMs });
          return { r, us: Math.round((performance.now() - t0) * 1000) };
        },
        publish: async ({ r, us }, { epoch }) => {
          if (inPlace) await copyInto(data, out!);
          const stats = this.host.stats;
          stats.allReduces++;
          stats.allReduceBytes += data.byteLength;
          stats.allReduceUs += us;
          stats.bytesSent += r.bytesSent;
          stats.bytesReceived += r.bytesReceived;
          return { data: inPlace ? data : out!, worldSize: r.worldSize, bytesSent: r.bytesSent, bytesReceived: r.bytesReceived, epoch };
        },
      });
    } finally {
      if (inPlace && out) this.returnScratch(out);
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
        results[i] = await this.ops.withRetries(() => one(data, opts), 'All-reduce', opts.tag!, deadline, () => firstError !== undefined);
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
