/**
 * GPU memory for TCCL: {@link DeviceBuffer} (CUDA device memory: allocate, copy from and to TypedArrays, wrap a
 * pointer another native library owns), {@link allReduceDevice} (all-reduce of device memory with the same
 * semantics as for host memory), the GPU codecs and content hash, and a thin NCCL communicator.
 *
 * The CUDA runtime and NCCL are loaded at run time, so the same binary works on hosts without GPUs: every GPU
 * call then rejects with {@link CudaUnavailableError}, whose message says what is missing and what to install.
 * {@link cudaInfo} tells what was found. See docs/gpu.md.
 *
 * @example
 * ```ts
 * import { Communicator, DeviceBuffer, allReduceDevice } from 'tccl';
 * const comm = await Communicator.connect({ master: '10.0.0.1:48148' });
 * const grad = await DeviceBuffer.from(new Float32Array(1 << 20).fill(1), { device: 0 });
 * await allReduceDevice(comm, grad, { op: 'avg' });   // staged through pinned host memory, the CPU ring
 * const host = await grad.toArray();                   // Float32Array
 * grad.free();
 * ```
 */
import { native } from '../binding';
import type { CudaInfo } from '../binding';

/** What CUDA and NCCL this process can use. Loads the libraries on first call; never throws. */
export function cudaInfo(): CudaInfo {
  return native().cudaInfo();
}

export type { CudaInfo };
export type { AllReduceTarget } from '../collective';
export { CudaError, CudaUnavailableError } from '../errors';
export { DeviceBuffer, DeviceBufferOptions } from './buffer';
export { DeviceAllReduceOptions, DeviceAllReduceResult, allReduceDevice, allReduceAny } from './staged';
export { GpuCodec, GpuCodecOptions, encodedSize, gpuDecode, gpuEncode } from './kernels';
export { NcclCommunicator } from './nccl';
