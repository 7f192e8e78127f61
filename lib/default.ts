/**
 * The process-wide default communicator, as torch.distributed users know it from init_process_group:
 *
 * ```ts
 * import { init, allReduce } from 'tccl';
 * await init();                       // TCCL_MASTER=host:port, TCCL_PEER_GROUP, TCCL_TOKEN
 * await allReduce(grads);             // in place, over the default communicator's group
 * ```
 */
import type { TensorArray } from './dtype';
import { ClosedError } from './errors';
import { Communicator, CommunicatorAllReduceResult, CommunicatorOptions } from './peer/communicator';
import type { AllReduceOptions } from './collective';

let current: Communicator | undefined;
let starting: Promise<Communicator> | undefined;

/** Options of init(): those of Communicator.connect, each defaulting to its environment variable. */
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
  return { ...options, master, peerGroup, token };
}

/** Connects the default communicator (once; later calls return the same one until shutdown()). */
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

/** Closes the default communicator. */
export async function shutdown(): Promise<void> {
  const c = current;
  current = undefined;
  await c?.close();
}
