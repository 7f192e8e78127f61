/**
 * The low-level static group: peers that know each other's addresses up front (rank + list of `host:port`),
 * with no master. It is what the master-driven {@link Communicator} automates; use it directly for fixed
 * clusters and tests. A peer lost breaks the group: every pending and later operation rejects with
 * PeerLostError, and the caller builds a new group.
 *
 * @example
 * ```ts
 * import { RingGroup } from 'tccl';
 * const group = await RingGroup.create({ rank: 0, peers: ['10.0.0.1:29500', '10.0.0.2:29500'], token: 'secret' });
 * const grad = new Float32Array(1 << 20).fill(1);
 * await group.allReduce(grad, { op: 'avg' });
 * await group.close();
 * ```
 */
import { createHash } from 'node:crypto';
import type { AllReduceOptions, AllReduceResult, EngineOptions } from './collective';
import type { DeviceAllReduceOptions, DeviceAllReduceResult, DeviceBuffer } from './device';
import { DType, ReduceOp, TensorArray, resolveDType, resolveReduceOp } from './dtype';
import { Engine } from './engine';
import { InvalidArgumentError } from './errors';
import { checkInt, parseHostPort } from './validate';

export interface RingGroupOptions extends EngineOptions {
  /** This peer's position in `peers`. */
  rank: number;
  /** Every member's data-plane address `host:port`, in ring order, the same list on every peer. */
  peers: string[];
  /**
   * Shared secret: connections that do not present it are refused. Every member passes the same token.
   * Without one, anyone who can reach the port can join the ring: use a token outside a trusted network.
   */
  token?: string;
}

/** Parses `host:port` (IPv6 as `[::1]:port`). */
export function parseAddress(address: string, what = 'address'): { host: string; port: number } {
  return parseHostPort(address, what);
}

/** 16-byte connection ticket derived from a token (all zeros without one). */
export function ticketFromToken(token: string | undefined): Uint8Array {
  if (token === undefined || token === '') return new Uint8Array(16);
  return new Uint8Array(createHash('sha256').update('tccl-ring-ticket\0').update(token).digest().subarray(0, 16));
}

/** Options of RingGroup's broadcast, allGather and reduceScatter. */
export interface RingCollectiveOptions {
  dtype?: DType;
  tag?: number;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface RingCollectiveResult<T extends TensorArray> {
  data: T;
  worldSize: number;
  bytesSent: number;
  bytesReceived: number;
}

function alike<T extends TensorArray>(like: T, n: number): T {
  return new (like.constructor as new (n: number) => T)(n);
}

export class RingGroup {
  /** This peer's rank. */
  readonly rank: number;
  /** Number of peers. */
  readonly size: number;
  private readonly engine: Engine;

  private constructor(engine: Engine, rank: number, size: number) {
    this.engine = engine;
    this.rank = rank;
    this.size = size;
  }

  /**
   * Listens on this rank's address from `peers` (binding `host` if given, else that address's host) and forms the
   * ring. Connections to the neighbours are made in the background; the first operation waits for them.
   */
  static async create(options: RingGroupOptions): Promise<RingGroup> {
    const { rank, peers } = options;
    if (!Array.isArray(peers) || peers.length === 0) throw new InvalidArgumentError('Expected "peers" to be a non-empty array of "host:port"');
    checkInt('rank', rank, 0, peers.length - 1);
    const parsed = peers.map((p, i) => parseAddress(p, `peers[${i}]`));
    const engine = Engine.create({ ...options, host: options.host ?? parsed[rank].host, port: parsed[rank].port });
    return RingGroup.fromEngine(engine, rank, peers, options.token);
  }

  /**
   * Forms the ring on an engine that is already listening (e.g. on an OS-chosen port whose address was then
   * shared with the other peers).
   */
  static fromEngine(engine: Engine, rank: number, peers: string[], token?: string): RingGroup {
    const members = peers.map((p, i) => ({ id: `rank${i}@${p}`, ...parseAddress(p, `peers[${i}]`) }));
    engine.configure(1, rank, members, ticketFromToken(token));
    return new RingGroup(engine, rank, peers.length);
  }

  /**
   * All-reduce `data` with every peer of the group: each peer must call it with the same element count, dtype,
   * op and tag. Resolves when this peer holds the result; rejects with PeerLostError, TimeoutError, AbortError or
   * MismatchError, leaving `data` as it was.
   */
  allReduce(data: DeviceBuffer, options?: DeviceAllReduceOptions): Promise<DeviceAllReduceResult>;
  allReduce<T extends TensorArray>(data: T, options?: AllReduceOptions<T>): Promise<AllReduceResult<T>>;
  allReduce(data: TensorArray | DeviceBuffer, options?: object): Promise<unknown> {
    return this.engine.allReduce(data as TensorArray, options as AllReduceOptions);
  }

  /**
   * Sends rank `root`'s `data` to every rank (same length, dtype and tag everywhere). `data` changes only when the
   * operation succeeded. A static group does not retry: a PeerLostError leaves the retry to the caller.
   *
   * @example
   * ```ts
   * await group.broadcast(weights, { root: 0 });
   * ```
   */
  async broadcast<T extends TensorArray>(data: T, options: RingCollectiveOptions & { root: number }): Promise<RingCollectiveResult<T>> {
    const root = checkInt('root', options?.root, 0, this.size - 1);
    const out = this.rank === root ? data : alike(data, data.length);
    const r = await this.engine.collective({ ...this.common(data, options), kind: 'broadcast', input: out, output: out, root });
    if (out !== data) data.set(out as never);
    return { ...r, data };
  }

  /**
   * Concatenates every rank's `data` (equal lengths) in rank order into a new array.
   *
   * @example
   * ```ts
   * const { data: all } = await group.allGather(shard); // all.length === group.size * shard.length
   * ```
   */
  async allGather<T extends TensorArray>(data: T, options: RingCollectiveOptions = {}): Promise<RingCollectiveResult<T>> {
    const out = alike(data, data.length * this.size);
    const chunkCounts = new Array<number>(this.size).fill(data.length);
    const r = await this.engine.collective({ ...this.common(data, options), kind: 'allGather', input: data, output: out, chunkCounts });
    return { ...r, data: out };
  }

  /**
   * Reduces `data` over the ranks and returns this rank's chunk: elements [offset, offset + data.length) of the
   * result, the array split evenly in rank order. `data` is not changed.
   *
   * @example
   * ```ts
   * const { data: mine, offset } = await group.reduceScatter(grad, { op: 'sum' });
   * ```
   */
  async reduceScatter<T extends TensorArray>(data: T, options: RingCollectiveOptions & { op?: ReduceOp } = {}): Promise<RingCollectiveResult<T> & { offset: number }> {
    const op = resolveReduceOp(options.op);
    const out = alike(data, data.length);
    const r = await this.engine.collective({ ...this.common(data, options), kind: 'reduceScatter', input: data, output: out, op });
    const start = Math.floor((data.length * this.rank) / this.size);
    const end = Math.floor((data.length * (this.rank + 1)) / this.size);
    return { ...r, data: out.slice(start, end) as T, offset: start };
  }

  private common(data: TensorArray, options: RingCollectiveOptions) {
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('Expected an options object');
    return {
      dtype: resolveDType(data, options.dtype), tag: checkInt('tag', options.tag ?? 0, 0),
      timeoutMs: checkInt('timeoutMs', options.timeoutMs ?? 30_000, 0, 2 ** 31 - 1), signal: options.signal,
    };
  }

  /** Closes every connection; pending operations reject with ClosedError. */
  close(): Promise<void> {
    return this.engine.close();
  }
}
