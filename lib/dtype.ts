/**
 * Element types and reduce operations, and how TypedArrays map to them.
 * The numeric values match native/core/dtype.h and travel on the wire: never renumber.
 */
import { InvalidArgumentError } from './errors';
import { describeValue } from './validate';

export type DType =
  | 'float32' | 'float64' | 'float16' | 'bfloat16'
  | 'int8' | 'uint8' | 'int16' | 'uint16' | 'int32' | 'uint32' | 'int64' | 'uint64';

export type ReduceOp = 'sum' | 'avg' | 'prod' | 'min' | 'max';

export const DTYPE_CODES: Readonly<Record<DType, number>> = {
  float32: 0, float64: 1, float16: 2, bfloat16: 3,
  int8: 4, uint8: 5, int16: 6, uint16: 7, int32: 8, uint32: 9, int64: 10, uint64: 11,
};

export const REDUCE_OP_CODES: Readonly<Record<ReduceOp, number>> = { sum: 0, avg: 1, prod: 2, min: 3, max: 4 };

/** The TypedArrays TCCL accepts. float16/bfloat16 travel as Uint16Array with an explicit dtype. */
export type TensorArray =
  | Float32Array | Float64Array | Int8Array | Uint8Array | Int16Array | Uint16Array
  | Int32Array | Uint32Array | BigInt64Array | BigUint64Array;

/** The class of a TensorArray: a length or an ArrayBuffer range in, an array out. */
export interface TensorArrayConstructor {
  new (length: number): TensorArray;
  new (buffer: ArrayBufferLike, byteOffset?: number, length?: number): TensorArray;
  readonly BYTES_PER_ELEMENT: number;
  readonly name: string;
}

/** The array class that holds each dtype on the host (its element size is the dtype's). */
const ARRAY_TYPES: Readonly<Record<DType, TensorArrayConstructor>> = {
  float32: Float32Array, float64: Float64Array, float16: Uint16Array, bfloat16: Uint16Array,
  int8: Int8Array, uint8: Uint8Array, int16: Int16Array, uint16: Uint16Array,
  int32: Int32Array, uint32: Uint32Array, int64: BigInt64Array, uint64: BigUint64Array,
};

/** Bytes per element of a dtype. */
export function dtypeBytes(dtype: DType): number {
  return ARRAY_TYPES[dtype].BYTES_PER_ELEMENT;
}

/** Checks a dtype name. */
export function checkDType(dtype: unknown): DType {
  if (typeof dtype !== 'string' || !(dtype in DTYPE_CODES)) {
    throw new InvalidArgumentError(`Unknown dtype ${JSON.stringify(dtype)}; expected one of ${Object.keys(DTYPE_CODES).join(', ')}`);
  }
  return dtype as DType;
}

/** The TypedArray class that holds a dtype on the host (Uint16Array for float16/bfloat16). */
export function arrayTypeOf(dtype: DType): TensorArrayConstructor {
  return ARRAY_TYPES[checkDType(dtype)];
}

/** The dtype a TypedArray holds by default (a Uint16Array is uint16 unless float16/bfloat16 is given). */
export function inferDType(data: ArrayBufferView): DType | undefined {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Float64Array) return 'float64';
  if (data instanceof Int8Array) return 'int8';
  if (data instanceof Uint8Array) return 'uint8';
  if (data instanceof Int16Array) return 'int16';
  if (data instanceof Uint16Array) return 'uint16';
  if (data instanceof Int32Array) return 'int32';
  if (data instanceof Uint32Array) return 'uint32';
  if (data instanceof BigInt64Array) return 'int64';
  if (data instanceof BigUint64Array) return 'uint64';
  return undefined;
}

/** Which TypedArray classes may carry a dtype. */
function arrayMatchesDType(data: ArrayBufferView, dtype: DType): boolean {
  const natural = inferDType(data);
  if (natural === dtype) return true;
  // 16-bit floats are bit patterns in a Uint16Array (or Int16Array); Uint8Array is accepted for raw bytes of int8.
  if ((dtype === 'float16' || dtype === 'bfloat16') && (natural === 'uint16' || natural === 'int16')) return true;
  return false;
}

/**
 * Validates a tensor argument and returns its dtype; throws a TypeError that says what was wrong and what to do.
 */
export function resolveDType(data: unknown, dtype: DType | undefined, what = 'data'): DType {
  if (!ArrayBuffer.isView(data) || data instanceof DataView) {
    throw new InvalidArgumentError(
      `Expected "${what}" to be a TypedArray (Float32Array, Float64Array, Int32Array, Uint16Array for float16/bfloat16, ...), got ${describeValue(data)}`,
    );
  }
  if (dtype !== undefined) {
    checkDType(dtype);
    if (!arrayMatchesDType(data, dtype)) {
      throw new InvalidArgumentError(
        `dtype "${dtype}" does not match ${data.constructor.name} for "${what}": ` +
          (dtype === 'float16' || dtype === 'bfloat16'
            ? `pass ${dtype} values as the bits in a Uint16Array`
            : `pass a ${ARRAY_TYPES[dtype].name} or leave dtype out`),
      );
    }
    return dtype;
  }
  const inferred = inferDType(data);
  if (!inferred) throw new InvalidArgumentError(`Unsupported array type ${data.constructor.name} for "${what}"`);
  return inferred;
}

/** Validates a reduce op name. */
export function resolveReduceOp(op: unknown): ReduceOp {
  if (op === undefined) return 'sum';
  if (typeof op !== 'string' || !(op in REDUCE_OP_CODES)) {
    throw new InvalidArgumentError(`Unknown reduce op ${JSON.stringify(op)}; expected one of sum, avg, prod, min, max`);
  }
  return op as ReduceOp;
}
