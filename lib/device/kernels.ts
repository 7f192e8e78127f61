/** The GPU codecs: the same bytes as the CPU codecs of native/core/codec.h, computed on the device. */
import { native } from '../binding';
import { CODEC_CODES, CodecName } from '../collective';
import { InvalidArgumentError, traced } from '../errors';
import { DeviceBuffer, checkCount } from './buffer';

/** Codec names of the GPU codecs (same wire values as the CPU codecs). */
export type GpuCodec = CodecName;

/** Options of the GPU codecs. */
export interface GpuCodecOptions {
  /** Elements per block for uint8/uint4 (default 256). */
  blockSize?: number;
  /** Stochastic rounding (uint8/uint4; default false). */
  stochastic?: boolean;
  /** Seed of the stochastic rounding (default 0). */
  seed?: number;
}

function codecCode(codec: unknown): number {
  if (typeof codec !== 'string' || !(codec in CODEC_CODES)) throw new InvalidArgumentError(`Unknown codec ${JSON.stringify(codec)}`);
  return CODEC_CODES[codec as GpuCodec];
}

/** Bytes that encoding `count` float32 values takes (same as the CPU codecs). */
export function encodedSize(codec: GpuCodec, count: number, blockSize = 256): number {
  return native().encodedSize(codecCode(codec), checkCount('count', count, 0), checkCount('blockSize', blockSize, 0));
}

/**
 * Encodes the float32 values of `src` on the GPU into `out` (uint8, at least encodedSize bytes): the same bytes
 * as the CPU encoder. Resolves to false when the CPU encoder would refuse the input (NaN, Inf, overflow).
 */
export function gpuEncode(codec: GpuCodec, src: DeviceBuffer, out: DeviceBuffer, options: GpuCodecOptions = {}): Promise<boolean> {
  return traced(async () => {
    const code = codecCode(codec);
    if (!(src instanceof DeviceBuffer) || src.dtype !== 'float32') throw new InvalidArgumentError('Expected "src" to be a float32 DeviceBuffer');
    if (!(out instanceof DeviceBuffer)) throw new InvalidArgumentError('Expected "out" to be a DeviceBuffer');
    const blockSize = checkCount('blockSize', options.blockSize ?? 256, 0);
    const seed = checkCount('seed', options.seed ?? 0, 0);
    return native().deviceEncode(code, src.mem, src.length, blockSize, Boolean(options.stochastic), seed, out.mem);
  });
}

/** Decodes `count` values from `src` into the float32 buffer `out` on the GPU (`accumulate`: out += decoded). */
export function gpuDecode(codec: GpuCodec, src: DeviceBuffer, count: number, out: DeviceBuffer, options: { blockSize?: number; accumulate?: boolean } = {}): Promise<void> {
  return traced(async () => {
    const code = codecCode(codec);
    if (!(src instanceof DeviceBuffer)) throw new InvalidArgumentError('Expected "src" to be a DeviceBuffer');
    if (!(out instanceof DeviceBuffer) || out.dtype !== 'float32') throw new InvalidArgumentError('Expected "out" to be a float32 DeviceBuffer');
    const blockSize = checkCount('blockSize', options.blockSize ?? 256, 0);
    return native().deviceDecode(code, src.mem, checkCount('count', count, 0), blockSize, out.mem, Boolean(options.accumulate));
  });
}
