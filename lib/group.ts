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
import type { TensorArray } from './dtype';
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

  /** Closes every connection; pending operations reject with ClosedError. */
  close(): Promise<void> {
    return this.engine.close();
  }
}
