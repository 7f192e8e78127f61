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
import { native } from './binding';
import { DType, DTYPE_CODES, TensorArray, dtypeBytes, resolveDType, REDUCE_OP_CODES, resolveReduceOp } from './dtype';
import type { AllReduceOptions } from './engine';
import { TcclError } from './errors';

/** CUDA is not usable here: no runtime library, no driver, no GPU, or the kernels are not in this build. */
export class CudaUnavailableError extends TcclError {
  constructor(message: string, code = 'CUDA_UNAVAILABLE', options?: { cause?: unknown }) {
    super(code, message, false, options);
  }
}

/** A CUDA or NCCL call failed (out of memory, an illegal address, a failed collective). */
export class CudaError extends TcclError {
  constructor(message: string, code = 'CUDA_ERROR', options?: { cause?: unknown }) {
    super(code, message, false, options);
  }
}

/** What the process found of CUDA and NCCL (never throws). */
export interface CudaInfo {
  /** The GPU codecs and content hash were compiled in (`npm run build:cuda`). */
  kernels: boolean;
  runtimeLoaded: boolean;
  /** The libcudart that was loaded ('' when none). */
  runtimePath: string;
  /** Why no runtime was loaded: what was tried, what to install ('' when loaded). */
  runtimeError: string;
  /** e.g. 13000 for CUDA 13.0; 0 when unknown. */
  runtimeVersion: number;
  driverVersion: number;
  /** Usable GPUs (0 without a driver or a GPU). */
  deviceCount: number;
  /** Why there are no devices ('' when there are). */
  deviceError: string;
  ncclLoaded: boolean;
  ncclPath: string;
  ncclError: string;
  /** e.g. 22703 for NCCL 2.27.3; 0 when not loaded. */
  ncclVersion: number;
}

/** Codec names of the GPU codecs (same wire values as native/core/codec.h). */
export type GpuCodec = 'none' | 'uint8' | 'uint4' | 'float16' | 'bfloat16';
const GPU_CODEC_CODES: Readonly<Record<GpuCodec, number>> = { none: 0, uint8: 1, uint4: 2, float16: 3, bfloat16: 4 };

// ---- the native surface of native/addon/device.cpp ----

interface NativeDeviceMemory {
  allocate(byteLength: number, device: number): Promise<void>;
  wrap(pointer: bigint, byteLength: number, device: number): void;
  copyFromHost(src: ArrayBufferView, byteOffset: number): Promise<void>;
  copyToHost(dst: ArrayBufferView, byteOffset: number): Promise<void>;
  contentHash(): Promise<bigint>;
  free(): void;
  readonly pointer: bigint;
  readonly byteLength: number;
  readonly device: number;
  readonly owned: boolean;
  readonly freed: boolean;
}
interface NativeNcclCommunicator {
  init(id: Uint8Array, nranks: number, rank: number, device: number): Promise<void>;
  collective(kind: number, send: NativeDeviceMemory, recv: NativeDeviceMemory, count: number, dtype: number, op: number): Promise<void>;
  abort(): void;
  destroy(): Promise<void>;
}
interface NativeDeviceAddon {
  DeviceMemory: new () => NativeDeviceMemory;
  NcclCommunicator: new () => NativeNcclCommunicator;
  cudaInfo(): CudaInfo;
  allocPinned(byteLength: number): Promise<ArrayBuffer>;
  freePinned(buffer: ArrayBuffer): void;
  deviceEncode(codec: number, src: NativeDeviceMemory, count: number, blockSize: number, stochastic: boolean, seed: number, out: NativeDeviceMemory): Promise<boolean>;
  deviceDecode(codec: number, src: NativeDeviceMemory, count: number, blockSize: number, out: NativeDeviceMemory, accumulate: boolean): Promise<void>;
  ncclUniqueId(): Uint8Array;
  encodedSize(codec: number, count: number, blockSize: number): number;
}

function addon(): NativeDeviceAddon {
  return native() as unknown as NativeDeviceAddon;
}

/** Maps a native rejection to the exported classes, keeping the caller's stack. */
function deviceError(err: unknown, stack?: string): Error {
  if (!(err instanceof Error)) return new TcclError('INTERNAL', String(err));
  const code = (err as Error & { code?: string }).code;
  let out: Error;
  switch (code) {
    case 'CUDA_UNAVAILABLE': case 'NOT_BUILT': case 'NCCL_UNAVAILABLE': out = new CudaUnavailableError(err.message, code); break;
    case 'CUDA_ERROR': case 'NCCL_ERROR': out = new CudaError(err.message, code); break;
    case 'FREED': case 'INVALID_STATE': case 'ABORTED': case 'INTERNAL': out = new TcclError(code, err.message); break;
    case 'INVALID_ARGUMENT': out = new TypeError(err.message); break;
    default: return err;
  }
  if (stack) out.stack = `${out.name}: ${out.message}\n${stack.split('\n').slice(1).join('\n')}`;
  return out;
}

async function call<T>(f: () => Promise<T> | T): Promise<T> {
  const stack = new Error().stack;
  try {
    return await f();
  } catch (err) {
    throw deviceError(err, stack);
  }
}

/** What CUDA and NCCL this process can use. Loads the libraries on first call; never throws. */
export function cudaInfo(): CudaInfo {
  return addon().cudaInfo();
}

function checkCount(name: string, v: unknown, min: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > Number.MAX_SAFE_INTEGER) {
    throw new TypeError(`Expected "${name}" to be an integer of at least ${min}, got ${String(v)}`);
  }
  return v;
}

function checkDType(dtype: unknown): DType {
  if (typeof dtype !== 'string' || !(dtype in DTYPE_CODES)) {
    throw new TypeError(`Unknown dtype ${JSON.stringify(dtype)}; expected one of ${Object.keys(DTYPE_CODES).join(', ')}`);
  }
  return dtype as DType;
}

const ARRAY_OF: Readonly<Record<DType, new (n: number) => TensorArray>> = {
  float32: Float32Array, float64: Float64Array, float16: Uint16Array, bfloat16: Uint16Array,
  int8: Int8Array, uint8: Uint8Array, int16: Int16Array, uint16: Uint16Array,
  int32: Int32Array, uint32: Uint32Array, int64: BigInt64Array, uint64: BigUint64Array,
};

/** The TypedArray class that holds a dtype on the host (Uint16Array for float16/bfloat16). */
export function hostArrayOf(dtype: DType): new (n: number) => TensorArray {
  return ARRAY_OF[checkDType(dtype)];
}

/** Where and how a DeviceBuffer is created. */
export interface DeviceBufferOptions {
  /** Element type (default: float32 for alloc, the array's own type for from). */
  dtype?: DType;
  /** CUDA device index (default 0). */
  device?: number;
}

/**
 * A typed range of CUDA device memory: `length` elements of `dtype` on GPU `device`. Either owned (allocated by
 * {@link DeviceBuffer.alloc} / {@link DeviceBuffer.from}, released by {@link DeviceBuffer.free} or when garbage
 * collected) or wrapped (a pointer another library owns, see {@link DeviceBuffer.wrap}; TCCL never frees it).
 *
 * Copies run on native worker threads; the JS thread never waits for the GPU. A buffer must not be used after
 * free() (calls reject with code `FREED`); memory an operation in flight is using stays valid until it ends.
 *
 * @example
 * ```ts
 * const buf = await DeviceBuffer.alloc(1024, { dtype: 'float32', device: 0 });
 * await buf.copyFrom(new Float32Array(1024).fill(2));
 * const back = (await buf.toArray()) as Float32Array; // [2, 2, ...]
 * buf.free();
 * // memory from another library (e.g. a tensor's data pointer), not owned by TCCL:
 * const view = DeviceBuffer.wrap(0x7f1234000000n, 4096, 'float32', { device: 0 });
 * ```
 */
export class DeviceBuffer {
  /** Element type. */
  readonly dtype: DType;
  /** Number of elements. */
  readonly length: number;
  /** Size in bytes (length × element size). */
  readonly byteLength: number;
  /** CUDA device index. */
  readonly device: number;
  /** @internal */
  readonly mem: NativeDeviceMemory;
  private staging?: Promise<ArrayBuffer>;
  private busy = false;

  private constructor(mem: NativeDeviceMemory, dtype: DType, length: number, device: number) {
    this.mem = mem;
    this.dtype = dtype;
    this.length = length;
    this.byteLength = length * dtypeBytes(dtype);
    this.device = device;
  }

  /** Allocates `length` elements (uninitialized) on a device. Rejects with CudaUnavailableError without CUDA. */
  static async alloc(length: number, options: DeviceBufferOptions = {}): Promise<DeviceBuffer> {
    const dtype = checkDType(options.dtype ?? 'float32');
    checkCount('length', length, 1);
    const device = checkCount('device', options.device ?? 0, 0);
    const bytes = length * dtypeBytes(dtype);
    if (!Number.isSafeInteger(bytes)) throw new TypeError(`A DeviceBuffer of ${length} ${dtype} elements is too large`);
    const mem = new (addon().DeviceMemory)();
    await call(() => mem.allocate(bytes, device));
    return new DeviceBuffer(mem, dtype, length, device);
  }

  /** Allocates a buffer with the array's length and copies the array into it. */
  static async from(data: TensorArray, options: DeviceBufferOptions = {}): Promise<DeviceBuffer> {
    const dtype = resolveDType(data, options.dtype);
    if (data.length === 0) throw new TypeError('Cannot create a DeviceBuffer from an empty array');
    const buf = await DeviceBuffer.alloc(data.length, { dtype, device: options.device });
    try {
      await buf.copyFrom(data);
    } catch (err) {
      buf.free();
      throw err;
    }
    return buf;
  }

  /**
   * Wraps device memory owned by someone else (another native library, a tensor framework): `byteLength` bytes
   * of `dtype` at `pointer` on `options.device`. TCCL never frees it: the owner must keep it alive while TCCL
   * uses it. When a CUDA runtime is present it checks that the pointer is device (or managed) memory on that
   * device; without one the buffer can be created, and every operation on it rejects with CudaUnavailableError.
   */
  static wrap(pointer: bigint, byteLength: number, dtype: DType, options: { device?: number } = {}): DeviceBuffer {
    if (typeof pointer !== 'bigint') throw new TypeError(`Expected the device pointer to be a BigInt, got ${typeof pointer}`);
    if (pointer === 0n) throw new TypeError('Cannot wrap a null device pointer');
    if (pointer < 0n || pointer >= 1n << 64n) throw new TypeError('The device pointer must be an unsigned 64-bit value');
    const type = checkDType(dtype);
    checkCount('byteLength', byteLength, 1);
    const es = dtypeBytes(type);
    if (byteLength % es !== 0) throw new TypeError(`byteLength ${byteLength} is not a multiple of the ${type} element size (${es})`);
    if (pointer % BigInt(es) !== 0n) throw new TypeError(`The device pointer is not aligned to the ${type} element size (${es})`);
    const device = checkCount('device', options.device ?? 0, 0);
    const mem = new (addon().DeviceMemory)();
    try {
      mem.wrap(pointer, byteLength, device);
    } catch (err) {
      throw deviceError(err);
    }
    return new DeviceBuffer(mem, type, byteLength / es, device);
  }

  /** The device address (0n after free()). */
  get pointer(): bigint {
    return this.mem.pointer;
  }
  /** True when TCCL allocated the memory (and frees it). */
  get owned(): boolean {
    return this.mem.owned;
  }
  /** True after free(). */
  get freed(): boolean {
    return this.mem.freed;
  }

  private checkLive(op: string): void {
    if (this.mem.freed) throw new TcclError('FREED', `DeviceBuffer.${op}: the buffer was freed (use after free())`);
  }

  private checkHost(what: string, data: TensorArray, offset: number): number {
    resolveDType(data, this.dtype, what);
    checkCount('offset', offset, 0);
    if (offset + data.length > this.length) {
      throw new TypeError(`${data.length} elements at offset ${offset} do not fit in a DeviceBuffer of ${this.length} ${this.dtype} elements`);
    }
    return offset * dtypeBytes(this.dtype);
  }

  /** Copies `src` (same dtype) into the buffer, starting at element `offset` (default 0). */
  async copyFrom(src: TensorArray, options: { offset?: number } = {}): Promise<void> {
    this.checkLive('copyFrom');
    const byteOffset = this.checkHost('src', src, options.offset ?? 0);
    await call(() => this.mem.copyFromHost(src, byteOffset));
  }

  /**
   * Copies the buffer (from element `offset`, as many elements as `dst` holds) into `dst`; without `dst`, into a
   * new array of the whole buffer (Uint16Array for float16/bfloat16). Resolves to the array.
   */
  async copyTo<T extends TensorArray>(dst?: T, options: { offset?: number } = {}): Promise<T> {
    this.checkLive('copyTo');
    const out = dst ?? (new ARRAY_OF[this.dtype](this.length) as T);
    const byteOffset = this.checkHost('dst', out, options.offset ?? 0);
    await call(() => this.mem.copyToHost(out, byteOffset));
    return out;
  }

  /** The whole buffer in a new host array. */
  toArray(): Promise<TensorArray> {
    return this.copyTo();
  }

  /**
   * Content hash of the buffer's bytes computed on the GPU: the same value as the CPU content hash of the same
   * bytes (docs/kernels.md). Needs the CUDA build (`npm run build:cuda`).
   */
  async contentHash(): Promise<bigint> {
    this.checkLive('contentHash');
    return call(() => this.mem.contentHash());
  }

  /** Releases the memory (owned buffers) and the pinned staging area. Idempotent. */
  free(): void {
    this.mem.free();
    const staging = this.staging;
    this.staging = undefined;
    staging?.then((ab) => addon().freePinned(ab), () => undefined);
  }

  /** @internal pinned host memory of the buffer's size, allocated once, for staged collectives. */
  pinnedStaging(): Promise<ArrayBuffer> {
    if (!this.staging) {
      const p = call(() => addon().allocPinned(this.byteLength));
      p.catch(() => {
        if (this.staging === p) this.staging = undefined;
      });
      this.staging = p;
    }
    return this.staging;
  }

  /** @internal one staged operation at a time per buffer. */
  acquire(op: string): () => void {
    if (this.busy) throw new TypeError(`DeviceBuffer.${op}: another operation on this buffer is still running`);
    this.busy = true;
    return () => {
      this.busy = false;
    };
  }
}

/** Anything with a host all-reduce: an Engine, a RingGroup, a Communicator. */
export interface AllReduceTarget {
  allReduce(data: TensorArray, options?: AllReduceOptions<TensorArray>): Promise<{ worldSize: number; bytesSent: number; bytesReceived: number }>;
}

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
export async function allReduceDevice(target: AllReduceTarget, data: DeviceBuffer, options: DeviceAllReduceOptions = {}): Promise<DeviceAllReduceResult> {
  if (!(data instanceof DeviceBuffer)) throw new TypeError('Expected "data" to be a DeviceBuffer');
  if (typeof target?.allReduce !== 'function') throw new TypeError('Expected "target" to be an Engine, RingGroup or Communicator');
  const { output: out = data, ...rest } = options;
  if (!(out instanceof DeviceBuffer)) throw new TypeError('Expected "output" to be a DeviceBuffer');
  if (out.dtype !== data.dtype || out.length !== data.length) {
    throw new TypeError(`Expected "output" to hold ${data.length} ${data.dtype} elements, got ${out.length} ${out.dtype}`);
  }
  resolveReduceOp(rest.op);
  if (data.freed || out.freed) throw new TcclError('FREED', 'allReduce: the DeviceBuffer was freed (use after free())');
  const release = data.acquire('allReduce');
  try {
    const Ctor = ARRAY_OF[data.dtype] as unknown as new (buffer: ArrayBuffer) => TensorArray;
    const stage = new Ctor(await data.pinnedStaging());
    await call(() => data.mem.copyToHost(stage, 0));
    const r = await target.allReduce(stage, { ...rest, dtype: data.dtype });
    await call(() => out.mem.copyFromHost(stage, 0));
    return { data: out, worldSize: r.worldSize, bytesSent: r.bytesSent, bytesReceived: r.bytesReceived };
  } finally {
    release();
  }
}

/** Options of the GPU codecs. */
export interface GpuCodecOptions {
  /** Elements per block for uint8/uint4 (default 256). */
  blockSize?: number;
  /** Stochastic rounding (uint8/uint4; default false). */
  stochastic?: boolean;
  /** Seed of the stochastic rounding (default 0). */
  seed?: number;
}

/** Bytes that encoding `count` float32 values takes (same as the CPU codecs). */
export function encodedSize(codec: GpuCodec, count: number, blockSize = 256): number {
  if (!(codec in GPU_CODEC_CODES)) throw new TypeError(`Unknown codec ${JSON.stringify(codec)}`);
  return addon().encodedSize(GPU_CODEC_CODES[codec], checkCount('count', count, 0), checkCount('blockSize', blockSize, 0));
}

/**
 * Encodes the float32 values of `src` on the GPU into `out` (uint8, at least encodedSize bytes): the same bytes
 * as the CPU encoder. Resolves to false when the CPU encoder would refuse the input (NaN, Inf, overflow).
 */
export async function gpuEncode(codec: GpuCodec, src: DeviceBuffer, out: DeviceBuffer, options: GpuCodecOptions = {}): Promise<boolean> {
  if (!(codec in GPU_CODEC_CODES)) throw new TypeError(`Unknown codec ${JSON.stringify(codec)}`);
  if (!(src instanceof DeviceBuffer) || src.dtype !== 'float32') throw new TypeError('Expected "src" to be a float32 DeviceBuffer');
  if (!(out instanceof DeviceBuffer)) throw new TypeError('Expected "out" to be a DeviceBuffer');
  const blockSize = checkCount('blockSize', options.blockSize ?? 256, 0);
  const seed = checkCount('seed', options.seed ?? 0, 0);
  return call(() => addon().deviceEncode(GPU_CODEC_CODES[codec], src.mem, src.length, blockSize, Boolean(options.stochastic), seed, out.mem));
}

/** Decodes `count` values from `src` into the float32 buffer `out` on the GPU (`accumulate`: out += decoded). */
export async function gpuDecode(codec: GpuCodec, src: DeviceBuffer, count: number, out: DeviceBuffer, options: { blockSize?: number; accumulate?: boolean } = {}): Promise<void> {
  if (!(codec in GPU_CODEC_CODES)) throw new TypeError(`Unknown codec ${JSON.stringify(codec)}`);
  if (!(src instanceof DeviceBuffer)) throw new TypeError('Expected "src" to be a DeviceBuffer');
  if (!(out instanceof DeviceBuffer) || out.dtype !== 'float32') throw new TypeError('Expected "out" to be a float32 DeviceBuffer');
  const blockSize = checkCount('blockSize', options.blockSize ?? 256, 0);
  return call(() => addon().deviceDecode(GPU_CODEC_CODES[codec], src.mem, checkCount('count', count, 0), blockSize, out.mem, Boolean(options.accumulate)));
}

/**
 * One rank of an NCCL communicator over the GPUs of one host (experimental: compiled, not yet run on a GPU in
 * this project's tests; see docs/gpu.md). Rank 0 creates the id with {@link NcclCommunicator.uniqueId}, the
 * id reaches the other ranks over the control plane, and every rank calls {@link NcclCommunicator.init}.
 */
export class NcclCommunicator {
  private constructor(private readonly impl: NativeNcclCommunicator, readonly rank: number, readonly size: number) {}

  /** A fresh 128-byte NCCL unique id (rank 0). Throws CudaUnavailableError without NCCL. */
  static uniqueId(): Uint8Array {
    try {
      return addon().ncclUniqueId();
    } catch (err) {
      throw deviceError(err);
    }
  }

  /** Joins the communicator (blocks a native thread until all `size` ranks joined). */
  static async init(id: Uint8Array, size: number, rank: number, device = 0): Promise<NcclCommunicator> {
    if (!(id instanceof Uint8Array) || id.length !== 128) throw new TypeError('Expected the NCCL unique id to be a 128-byte Uint8Array');
    checkCount('size', size, 1);
    checkCount('rank', rank, 0);
    if (rank >= size) throw new TypeError(`rank ${rank} is not below size ${size}`);
    const impl = new (addon().NcclCommunicator)();
    await call(() => impl.init(id, size, rank, checkCount('device', device, 0)));
    return new NcclCommunicator(impl, rank, size);
  }

  /** NCCL all-reduce of `send` into `recv` (may be the same buffer). */
  allReduce(send: DeviceBuffer, recv: DeviceBuffer = send, op: 'sum' | 'avg' | 'prod' | 'min' | 'max' = 'sum'): Promise<void> {
    return call(() => this.impl.collective(0, send.mem, recv.mem, send.length, DTYPE_CODES[send.dtype], REDUCE_OP_CODES[op]));
  }
  /** `send` holds size × n elements; rank r receives the reduction of slice r (n elements) in `recv`. */
  reduceScatter(send: DeviceBuffer, recv: DeviceBuffer, op: 'sum' | 'avg' | 'prod' | 'min' | 'max' = 'sum'): Promise<void> {
    return call(() => this.impl.collective(1, send.mem, recv.mem, recv.length, DTYPE_CODES[send.dtype], REDUCE_OP_CODES[op]));
  }
  /** Every rank's `send` (n elements) lands at slice rank of `recv` (size × n elements). */
  allGather(send: DeviceBuffer, recv: DeviceBuffer): Promise<void> {
    return call(() => this.impl.collective(2, send.mem, recv.mem, send.length, DTYPE_CODES[send.dtype], 0));
  }
  /** ncclCommAbort (on a native thread): what the group does when a peer is lost. */
  abort(): void {
    this.impl.abort();
  }
  destroy(): Promise<void> {
    return call(() => this.impl.destroy());
  }
}
