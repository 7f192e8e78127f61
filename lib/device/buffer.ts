/**
 * {@link DeviceBuffer}: a typed range of CUDA device memory (allocate, copy from and to TypedArrays, wrap a pointer
 * another native library owns). Copies run on native worker threads; the JS thread never waits for the GPU.
 */
import { native } from '../binding';
import type { NativeDeviceMemory } from '../binding';
import { DType, TensorArray, arrayTypeOf, checkDType, dtypeBytes, resolveDType } from '../dtype';
import { InvalidArgumentError, TcclError, toTcclError, traced } from '../errors';
import { checkInt } from '../validate';

/** A count or index argument (an integer of at least `min`). */
export function checkCount(name: string, v: unknown, min: number): number {
  return checkInt(name, v, min, Number.MAX_SAFE_INTEGER, `"${name}"`);
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
  static alloc(length: number, options: DeviceBufferOptions = {}): Promise<DeviceBuffer> {
    return traced(async () => {
      const dtype = checkDType(options.dtype ?? 'float32');
      checkCount('length', length, 1);
      const device = checkCount('device', options.device ?? 0, 0);
      const bytes = length * dtypeBytes(dtype);
      if (!Number.isSafeInteger(bytes)) throw new InvalidArgumentError(`A DeviceBuffer of ${length} ${dtype} elements is too large`);
      const mem = new (native().DeviceMemory)();
      await mem.allocate(bytes, device);
      return new DeviceBuffer(mem, dtype, length, device);
    });
  }

  /** Allocates a buffer with the array's length and copies the array into it. */
  static async from(data: TensorArray, options: DeviceBufferOptions = {}): Promise<DeviceBuffer> {
    const dtype = resolveDType(data, options.dtype);
    if (data.length === 0) throw new InvalidArgumentError('Cannot create a DeviceBuffer from an empty array');
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
    if (typeof pointer !== 'bigint') throw new InvalidArgumentError(`Expected the device pointer to be a BigInt, got ${typeof pointer}`);
    if (pointer === 0n) throw new InvalidArgumentError('Cannot wrap a null device pointer');
    if (pointer < 0n || pointer >= 1n << 64n) throw new InvalidArgumentError('The device pointer must be an unsigned 64-bit value');
    const type = checkDType(dtype);
    checkCount('byteLength', byteLength, 1);
    const es = dtypeBytes(type);
    if (byteLength % es !== 0) throw new InvalidArgumentError(`byteLength ${byteLength} is not a multiple of the ${type} element size (${es})`);
    if (pointer % BigInt(es) !== 0n) throw new InvalidArgumentError(`The device pointer is not aligned to the ${type} element size (${es})`);
    const device = checkCount('device', options.device ?? 0, 0);
    const mem = new (native().DeviceMemory)();
    try {
      mem.wrap(pointer, byteLength, device);
    } catch (err) {
      throw toTcclError(err);
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
      throw new InvalidArgumentError(`${data.length} elements at offset ${offset} do not fit in a DeviceBuffer of ${this.length} ${this.dtype} elements`);
    }
    return offset * dtypeBytes(this.dtype);
  }

  /** Copies `src` (same dtype) into the buffer, starting at element `offset` (default 0). */
  copyFrom(src: TensorArray, options: { offset?: number } = {}): Promise<void> {
    return traced(async () => {
      this.checkLive('copyFrom');
      await this.mem.copyFromHost(src, this.checkHost('src', src, options.offset ?? 0));
    });
  }

  /**
   * Copies the buffer (from element `offset`, as many elements as `dst` holds) into `dst`; without `dst`, into a
   * new array of the whole buffer (Uint16Array for float16/bfloat16). Resolves to the array.
   */
  copyTo<T extends TensorArray>(dst?: T, options: { offset?: number } = {}): Promise<T> {
    return traced(async () => {
      this.checkLive('copyTo');
      const out = dst ?? (new (arrayTypeOf(this.dtype))(this.length) as T);
      await this.mem.copyToHost(out, this.checkHost('dst', out, options.offset ?? 0));
      return out;
    });
  }

  /** The whole buffer in a new host array. */
  toArray(): Promise<TensorArray> {
    return this.copyTo();
  }

  /**
   * Content hash of the buffer's bytes computed on the GPU: the same value as the CPU content hash of the same
   * bytes (docs/kernels.md). Needs the CUDA build (`npm run build:cuda`).
   */
  contentHash(): Promise<bigint> {
    return traced(async () => {
      this.checkLive('contentHash');
      return this.mem.contentHash();
    });
  }

  /** Releases the memory (owned buffers) and the pinned staging area. Idempotent. */
  free(): void {
    this.mem.free();
    const staging = this.staging;
    this.staging = undefined;
    staging?.then((ab) => native().freePinned(ab), () => undefined);
  }

  /** @internal pinned host memory of the buffer's size, allocated once, for staged collectives. */
  pinnedStaging(): Promise<ArrayBuffer> {
    if (!this.staging) {
      const p = traced(() => native().allocPinned(this.byteLength));
      p.catch(() => {
        if (this.staging === p) this.staging = undefined;
      });
      this.staging = p;
    }
    return this.staging;
  }

  /** @internal one staged operation at a time per buffer. */
  acquire(op: string): () => void {
    if (this.busy) throw new InvalidArgumentError(`DeviceBuffer.${op}: another operation on this buffer is still running`);
    this.busy = true;
    return () => {
      this.busy = false;
    };
  }
}
