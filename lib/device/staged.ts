/**
 * All-reduce of device memory, staged through pinned host memory over any host all-reduce, and the one place that
 * decides between the device path and the host path ({@link allReduceAny}): Engine, RingGroup and Communicator
 * all dispatch through it, so a DeviceBuffer means the same everywhere.
 */
import type { AllReduceOptions, AllReduceResult, AllReduceTarget } from '../collective';
import { TensorArray, arrayTypeOf, resolveReduceOp } from '../dtype';
import { InvalidArgumentError, TcclError, traced } from '../errors';
import { DeviceBuffer } from './buffer';

/** Options of {@link allReduceDevice}: those of a host all-reduce, with a DeviceBuffer output. */
export interface DeviceAllReduceOptions extends Omit<AllReduceOptions<TensorArray>, 'output' | 'dtype'> {
  /** Where the result goes (same dtype and length, same or another device); default: in place. */
  output?: DeviceBuffer;
}

/** What {@link allReduceDevice} reports. */
export interface DeviceAllReduceResult {
  /** The buffer holding the result (the input unless `output` was given). */
  data: DeviceBuffer;
  worldSize: number;
  bytesSent: number;
  bytesReceived: number;
}

/**
 * All-reduce of device memory with exactly the semantics of the host all-reduce of `target` (ops, dtypes, tags,
 * quantization, timeouts, abort signals, the Communicator's retries and commit): the buffer is copied to pinned
 * host memory, reduced by the CPU ring, and copied back, each step on a native thread. The results are the same
 * bits as a host all-reduce of the same values. On failure the device buffer still holds its input (the copy
 * back happens only after success), so a retry is a plain second call.
 *
 * @example
 * ```ts
 * const grad = await DeviceBuffer.from(localGrad);
 * const r = await allReduceDevice(comm, grad, { op: 'avg', tag: 3 });
 * ```
 */
export function allReduceDevice(target: AllReduceTarget, data: DeviceBuffer, options: DeviceAllReduceOptions = {}): Promise<DeviceAllReduceResult> {
  return traced(async () => {
    if (!(data instanceof DeviceBuffer)) throw new InvalidArgumentError('Expected "data" to be a DeviceBuffer');
    if (typeof target?.allReduce !== 'function') throw new InvalidArgumentError('Expected "target" to be an Engine, RingGroup or Communicator');
    const { output: out = data, ...rest } = options;
    if (!(out instanceof DeviceBuffer)) throw new InvalidArgumentError('Expected "output" to be a DeviceBuffer');
    if (out.dtype !== data.dtype || out.length !== data.length) {
      throw new InvalidArgumentError(`Expected "output" to hold ${data.length} ${data.dtype} elements, got ${out.length} ${out.dtype}`);
    }
    resolveReduceOp(rest.op);
    if (data.freed || out.freed) throw new TcclError('FREED', 'allReduce: the DeviceBuffer was freed (use after free())');
    const release = data.acquire('allReduce');
    try {
      const stage = new (arrayTypeOf(data.dtype))(await data.pinnedStaging());
      await data.mem.copyToHost(stage, 0);
      const r = await target.allReduce(stage, { ...rest, dtype: data.dtype });
      await out.mem.copyFromHost(stage, 0);
      return { data: out, worldSize: r.worldSize, bytesSent: r.bytesSent, bytesReceived: r.bytesReceived };
    } finally {
      release();
    }
  });
}

/**
 * Runs `host` on a TypedArray and {@link allReduceDevice} over `target` on a DeviceBuffer: the public
 * `allReduce` of every layer is this one call.
 */
export function allReduceAny<R>(
  target: AllReduceTarget,
  data: TensorArray | DeviceBuffer,
  options: object | undefined,
  host: (data: TensorArray, options: AllReduceOptions) => Promise<R>,
): Promise<R | DeviceAllReduceResult> {
  if (data instanceof DeviceBuffer) return allReduceDevice(target, data, options as DeviceAllReduceOptions);
  return host(data, (options ?? {}) as AllReduceOptions);
}

export type { AllReduceResult };
