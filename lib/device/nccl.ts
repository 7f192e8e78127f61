/** A thin NCCL communicator over the GPUs of one host (NCCL loaded at run time). */
import { native } from '../binding';
import type { NativeNcclCommunicator } from '../binding';
import { DTYPE_CODES, REDUCE_OP_CODES, ReduceOp } from '../dtype';
import { InvalidArgumentError, toTcclError, traced } from '../errors';
import { DeviceBuffer, checkCount } from './buffer';

const ALL_REDUCE = 0;
const REDUCE_SCATTER = 1;
const ALL_GATHER = 2;

/**
 * One rank of an NCCL communicator over the GPUs of one host (experimental: compiled, not yet run on a GPU in
 * this project's tests; see docs/gpu.md). Rank 0 creates the id with {@link NcclCommunicator.uniqueId}, the
 * id reaches the other ranks over the control plane, and every rank calls {@link NcclCommunicator.init}.
 *
 * @example
 * ```ts
 * const id = rank === 0 ? NcclCommunicator.uniqueId() : await receiveIdFromRank0();
 * const nccl = await NcclCommunicator.init(id, size, rank, 0);
 * await nccl.allReduce(grad);
 * ```
 */
export class NcclCommunicator {
  private constructor(private readonly impl: NativeNcclCommunicator, readonly rank: number, readonly size: number) {}

  /** A fresh 128-byte NCCL unique id (rank 0). Throws CudaUnavailableError without NCCL. */
  static uniqueId(): Uint8Array {
    try {
      return native().ncclUniqueId();
    } catch (err) {
      throw toTcclError(err);
    }
  }

  /** Joins the communicator (blocks a native thread until all `size` ranks joined). */
  static init(id: Uint8Array, size: number, rank: number, device = 0): Promise<NcclCommunicator> {
    return traced(async () => {
      if (!(id instanceof Uint8Array) || id.length !== 128) throw new InvalidArgumentError('Expected the NCCL unique id to be a 128-byte Uint8Array');
      checkCount('size', size, 1);
      checkCount('rank', rank, 0);
      if (rank >= size) throw new InvalidArgumentError(`rank ${rank} is not below size ${size}`);
      const impl = new (native().NcclCommunicator)();
      await impl.init(id, size, rank, checkCount('device', device, 0));
      return new NcclCommunicator(impl, rank, size);
    });
  }

  /** NCCL all-reduce of `send` into `recv` (may be the same buffer). */
  allReduce(send: DeviceBuffer, recv: DeviceBuffer = send, op: ReduceOp = 'sum'): Promise<void> {
    return traced(() => this.impl.collective(ALL_REDUCE, send.mem, recv.mem, send.length, DTYPE_CODES[send.dtype], REDUCE_OP_CODES[op]));
  }
  /** `send` holds size × n elements; rank r receives the reduction of slice r (n elements) in `recv`. */
  reduceScatter(send: DeviceBuffer, recv: DeviceBuffer, op: ReduceOp = 'sum'): Promise<void> {
    return traced(() => this.impl.collective(REDUCE_SCATTER, send.mem, recv.mem, recv.length, DTYPE_CODES[send.dtype], REDUCE_OP_CODES[op]));
  }
  /** Every rank's `send` (n elements) lands at slice rank of `recv` (size × n elements). */
  allGather(send: DeviceBuffer, recv: DeviceBuffer): Promise<void> {
    return traced(() => this.impl.collective(ALL_GATHER, send.mem, recv.mem, send.length, DTYPE_CODES[send.dtype], 0));
  }
  /** ncclCommAbort (on a native thread): what the group does when a peer is lost. */
  abort(): void {
    this.impl.abort();
  }
  destroy(): Promise<void> {
    return traced(() => this.impl.destroy());
  }
}
