/**
 * The process-wide default communicator, as torch.distributed users know it from init_process_group:
 *
 * ```ts
 * import { init, allReduce } from 'tccl';
 * await init();                       // TCCL_MASTER=host:port, TCCL_PEER_GROUP, TCCL_TOKEN, TCCL_WORLD_SIZE
 * await allReduce(grads);             // in place, over the default communicator's group
 * ```
 *
 * init() waits for `worldSize` members (TCCL_WORLD_SIZE, default 1), and admission is 'auto': peers that join
 * later are voted in by the library at the next operation boundary the master announces.
 */
import type { TensorArray } from './dtype';
import { ClosedError, InvalidArgumentError } from './errors';
import {
  AllGatherOptions, AllGatherResult, BroadcastOptions, BroadcastResult, Communicator, CommunicatorAllReduceResult, CommunicatorOptions,
  ReduceScatterOptions, ReduceScatterResult,
} from './peer/communicator';
import type { AllReduceOptions } from './collective';

let current: Communicator | undefined;
let starting: Promise<Communicator> | undefined;

/**
 * Options of init(): those of Communicator.connect, each defaulting to its environment variable (`master`:
 * TCCL_MASTER, `peerGroup`: TCCL_PEER_GROUP, `token`: TCCL_TOKEN, `worldSize`: TCCL_WORLD_SIZE), with
 * `admission` defaulting to 'auto'.
 */
export type InitOptions = Partial<CommunicatorOptions>;

function fromEnv(options: InitOptions): CommunicatorOptions {
  const master = options.master ?? process.env.TCCL_MASTER;
  if (!master) throw new TypeError('No master given: pass { master: "host:port" } to init() or set TCCL_MASTER');
  let peerGroup = options.peerGroup;
  if (peerGroup === undefined && process.env.TCCL_PEER_GROUP !== undefined && process.env.TCCL_PEER_GROUP !== '') {
    peerGroup = Number(process.env.TCCL_PEER_GROUP);
    if (!Number.isInteger(peerGroup) || peerGroup < 0) {
      throw new TypeError(`Expected TCCL_PEER_GROUP to be a non-negative integer, got ${JSON.stringify(process.env.TCCL_PEER_GROUP)}`);
    }
  }
  const token = options.token ?? (process.env.TCCL_TOKEN || undefined);
  let worldSize = options.worldSize;
  if (worldSize === undefined && process.env.TCCL_WORLD_SIZE !== undefined && process.env.TCCL_WORLD_SIZE !== '') {
    worldSize = Number(process.env.TCCL_WORLD_SIZE);
    if (!Number.isInteger(worldSize) || worldSize < 1) {
      throw new InvalidArgumentError(`Expected TCCL_WORLD_SIZE to be a positive integer, got ${JSON.stringify(process.env.TCCL_WORLD_SIZE)}`);
    }
  }
  return { admission: 'auto', ...options, master, peerGroup, token, worldSize };
}

/**
 * Connects the default communicator (once; later calls return the same one until shutdown()) and waits until
 * its group has `worldSize` members.
 *
 * @example
 * ```ts
 * // TCCL_MASTER=10.0.0.1:48148 TCCL_TOKEN=... TCCL_WORLD_SIZE=4 node train.js   (on each of 4 hosts)
 * const comm = await init();          // resolves when all 4 are in
 * await allReduce(grad, { op: 'avg', weight: tokensThisStep });
 * ```
 */
export async function init(options: InitOptions = {}): Promise<Communicator> {
  if (current && !current.error) return current;
  if (starting) return starting;
  const opts = fromEnv(options);
  starting = Communicator.connect(opts);
  try {
    current = await starting;
    return current;
  } finally {
    starting = undefined;
  }
}

/** The default communicator; throws when init() has not been called. */
export function defaultCommunicator(): Communicator {
  if (!current) throw new ClosedError('No default communicator: call init() first');
  return current;
}

/** All-reduce over the default communicator (see Communicator.allReduce). */
export function allReduce<T extends TensorArray>(data: T, options?: AllReduceOptions<T>): Promise<CommunicatorAllReduceResult<T>> {
  return defaultCommunicator().allReduce(data, options);
}

/**
 * Broadcast over the default communicator (see Communicator.broadcast).
 *
 * @example
 * ```ts
 * await broadcast(weights, { root: 0 }); // every peer now holds rank 0's weights
 * ```
 */
export function broadcast<T extends TensorArray>(data: T, options: BroadcastOptions): Promise<BroadcastResult<T>> {
  return defaultCommunicator().broadcast(data, options);
}

/**
 * All-gather over the default communicator (see Communicator.allGather).
 *
 * @example
 * ```ts
 * const { data, participants } = await allGather(myShard);
 * ```
 */
export function allGather<T extends TensorArray>(data: T, options?: AllGatherOptions): Promise<AllGatherResult<T>> {
  return defaultCommunicator().allGather(data, options);
}

/**
 * Reduce-scatter over the default communicator (see Communicator.reduceScatter).
 *
 * @example
 * ```ts
 * const { data: shard, offset } = await reduceScatter(grad, { op: 'sum' });
 * ```
 */
export function reduceScatter<T extends TensorArray>(data: T, options?: ReduceScatterOptions): Promise<ReduceScatterResult<T>> {
  return defaultCommunicator().reduceScatter(data, options);
}

/** Closes the default communicator. */
export async function shutdown(): Promise<void> {
  const c = current;
  current = undefined;
  await c?.close();
}
