/**
 * Broadcast, all-gather and reduce-scatter through the master, each a committed operation (committed.ts) with the
 * all-reduce contract: the data plane writes only arrays of the operation's own, the caller's buffers change only
 * after the commit, and a failure is retried with the survivors once the group has re-formed. A retry in a smaller
 * group changes the result's shape: an all-gather holds one part per participant, and a reduce-scatter's chunk is
 * this peer's share of the participants; every result lists them (`participants`, in ring order, and `rank`).
 */
import type { DataPlaneCollective } from '../collective';
import { DType, REDUCE_OP_CODES, ReduceOp, TensorArray, resolveDType, resolveReduceOp } from '../dtype';
import { InvalidArgumentError, RootLostError } from '../errors';
import { checkInt } from '../validate';
import { monotonicMs } from '../clock';
import type { CommittedHost, CommittedOps, OpRun } from './committed';

const MAX_TIMEOUT_MS = 2 ** 31 - 1;
const INLINE_COPY_BYTES = 256 * 1024;

/** Options every collective here takes. */
export interface CollectiveOptions {
  /** The element type when the array alone does not say it (Uint16Array: float16 or bfloat16). */
  dtype?: DType;
  /** Same on every peer for the same operation; concurrent operations use different tags (default 0). */
  tag?: number;
  /** Deadline of one try without progress, ms (default 30000; 0 = none). */
  timeoutMs?: number;
  /** Gives up retrying after this long in total, ms (default 300000; 0 = never). */
  retryTimeoutMs?: number;
  signal?: AbortSignal;
}

/** Who computed a result: the members of the epoch it was committed in. */
export interface Participants {
  /** Peer ids (Communicator.id) of the participants, in ring order. */
  participants: string[];
  /** This peer's place in `participants`. */
  rank: number;
  worldSize: number;
  epoch: number;
  bytesSent: number;
  bytesReceived: number;
}

export interface BroadcastOptions extends CollectiveOptions {
  /** The peer whose data everyone receives: its id (Communicator.id), or its rank in the current group. */
  root: string | number;
}
export interface BroadcastResult<T extends TensorArray> extends Participants {
  /** The caller's array, now holding the root's data. */
  data: T;
  /** The root's peer id. */
  root: string;
}

export interface AllGatherOptions extends CollectiveOptions {
  /** Peers may pass arrays of different lengths (one more small all-gather learns them). Default false. */
  varying?: boolean;
}
export interface AllGatherResult<T extends TensorArray> extends Participants {
  /** Every participant's array, concatenated in `participants` order. */
  data: T;
  /** Elements each participant gave; participant i's part starts at the sum of counts[0..i). */
  counts: number[];
}

export interface ReduceScatterOptions extends CollectiveOptions {
  op?: ReduceOp;
}
export interface ReduceScatterResult<T extends TensorArray> extends Participants {
  /** This peer's chunk of the reduced array: elements [offset, offset + data.length). */
  data: T;
  offset: number;
}

interface Common {
  dtype: DType;
  tag: number;
  timeoutMs: number;
  deadline: number;
  signal?: AbortSignal;
}

/** A peer id without the data-plane address the master appends (`p3@10.0.0.2:4000` -> `p3`). */
function masterId(nativeId: string): string {
  const at = nativeId.lastIndexOf('@');
  return at < 0 ? nativeId : nativeId.slice(0, at);
}

function alloc<T extends TensorArray>(like: T, n: number): T {
  return new (like.constructor as new (n: number) => T)(n);
}

export class RingCollectives {
  constructor(private readonly host: CommittedHost, private readonly ops: CommittedOps) {}

  async broadcast<T extends TensorArray>(data: T, options: BroadcastOptions): Promise<BroadcastResult<T>> {
    const c = this.common('Broadcast', data, options);
    const root = options?.root;
    if (typeof root !== 'string' && !(Number.isInteger(root) && (root as number) >= 0)) {
      throw new InvalidArgumentError('Expected "root" to be a peer id (Communicator.id) or a rank (an integer >= 0)');
    }
    // A rank names a peer in the group of the first try; retries keep that peer, whatever its rank becomes.
    let rootId = typeof root === 'string' ? root : undefined;
    let rootIndex = 0;
    return this.retried('Broadcast', c, () => this.ops.run({
      what: 'Broadcast', tag: c.tag, timeoutMs: c.timeoutMs, signal: c.signal,
      check: () => {
        const ids = this.ids();
        if (rootId === undefined) {
          if ((root as number) >= ids.length) throw new InvalidArgumentError(`Broadcast root rank ${root} is not in a group of ${ids.length}`);
          rootId = ids[root as number];
        }
        rootIndex = ids.indexOf(rootId);
        if (rootIndex < 0) {
          throw new RootLostError(`Broadcast (tag ${c.tag}) root ${rootId} is not in group ${this.host.peerGroup} any more (participants: ${ids.join(', ')}); no survivor has its data`);
        }
      },
      compute: async (run) => {
        const mine = rootIndex === this.host.membership.index;
        const out = mine ? data : alloc(data, data.length);
        const r = await this.plane({ kind: 'broadcast', input: out === data ? data : out, output: out, root: rootIndex, ...c });
        return { out, r };
      },
      publish: async ({ out, r }, run) => {
        if (out !== data) await copyInto(data, out);
        return { data, root: rootId!, ...this.who(run, r) };
      },
    }));
  }

  async allGather<T extends TensorArray>(data: T, options: AllGatherOptions = {}): Promise<AllGatherResult<T>> {
    const c = this.common('All-gather', data, options);
    return this.retried('All-gather', c, () => this.ops.run({
      what: 'All-gather', tag: c.tag, timeoutMs: c.timeoutMs, signal: c.signal,
      compute: async (run) => {
        const n = this.host.membership.ring.length;
        let counts = new Array<number>(n).fill(data.length);
        if (options.varying) {
          // Counts are learned by an all-gather of one float64 per peer, under the same tag, before the data.
          const mine = new Float64Array([data.length]);
          const all = new Float64Array(n);
          await this.plane({ ...c, kind: 'allGather', input: mine, output: all, dtype: 'float64', chunkCounts: counts.map(() => 1) });
          counts = Array.from(all);
          // A ring installed meanwhile ended this try (the data would run in a group that did not count it).
          if (this.host.membership.epoch !== run.epoch) throw this.host.membership.superseded(run.epoch, 'All-gather');
        }
        const out = alloc(data, counts.reduce((a, b) => a + b, 0));
        const r = await this.plane({ ...c, kind: 'allGather', input: data, output: out, chunkCounts: counts });
        return { out, r, counts };
      },
      publish: async ({ out, r, counts }, run) => ({ data: out, counts, ...this.who(run, r) }),
    }));
  }

  async reduceScatter<T extends TensorArray>(data: T, options: ReduceScatterOptions = {}): Promise<ReduceScatterResult<T>> {
    const c = this.common('Reduce-scatter', data, options);
    const op = resolveReduceOp(options.op);
    if (REDUCE_OP_CODES[op] === undefined) throw new InvalidArgumentError(`Unknown op ${String(op)}`);
    return this.retried('Reduce-scatter', c, () => this.ops.run({
      what: 'Reduce-scatter', tag: c.tag, timeoutMs: c.timeoutMs, signal: c.signal,
      compute: async () => {
        const out = alloc(data, data.length);
        const r = await this.plane({ ...c, kind: 'reduceScatter', input: data, output: out, op });
        return { out, r };
      },
      publish: async ({ out, r }, run) => {
        const who = this.who(run, r);
        // The chunk split of native/core/chain.h: element-aligned, sizes differ by at most one.
        const start = Math.floor((data.length * who.rank) / who.worldSize);
        const end = Math.floor((data.length * (who.rank + 1)) / who.worldSize);
        return { data: out.slice(start, end) as T, offset: start, ...who };
      },
    }));
  }

  private common(what: string, data: TensorArray, options: CollectiveOptions): Common {
    const failure = this.host.failure();
    if (failure) throw failure;
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError(`Expected ${what} options to be an object`);
    const dtype = resolveDType(data, options.dtype);
    const tag = checkInt('tag', options.tag ?? 0, 0);
    const timeoutMs = checkInt('timeoutMs', options.timeoutMs ?? 30_000, 0, MAX_TIMEOUT_MS);
    const retryTimeoutMs = checkInt('retryTimeoutMs', options.retryTimeoutMs ?? 300_000, 0, MAX_TIMEOUT_MS);
    const deadline = retryTimeoutMs === 0 ? Infinity : monotonicMs() + retryTimeoutMs;
    return { dtype, tag, timeoutMs, deadline, signal: options.signal };
  }

  private retried<R>(what: string, c: Common, op: () => Promise<R>): Promise<R> {
    return this.ops.withRetries(op, what, c.tag, c.deadline, () => c.signal?.aborted === true);
  }

  private plane(args: DataPlaneCollective & Common) {
    const { deadline: _d, ...rest } = args;
    return this.host.dataPlane.collective(rest);
  }

  private ids(): string[] {
    return this.host.membership.ring.map((p) => masterId(p.id));
  }

  private who(run: OpRun, r: { bytesSent: number; bytesReceived: number }): Participants {
    const participants = this.ids();
    this.host.stats.bytesSent += r.bytesSent;
    this.host.stats.bytesReceived += r.bytesReceived;
    return { participants, rank: this.host.membership.index, worldSize: participants.length, epoch: run.epoch, bytesSent: r.bytesSent, bytesReceived: r.bytesReceived };
  }
}

async function copyInto(dst: TensorArray, src: TensorArray): Promise<void> {
  if (dst.byteLength <= INLINE_COPY_BYTES) dst.set(src as never);
  else {
    const { native } = await import('../binding');
    await native().copyAsync(dst, src);
  }
}
