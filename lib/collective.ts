/**
 * The vocabulary of collective operations, shared by every layer that runs them (the data-plane Engine, the
 * static RingGroup, the Communicator and the GPU staging): options, results, and the two interfaces a layer
 * builds on. Types and constants only, so that any module may import it without pulling in another layer.
 */
import type { LinkSecurity, NativePeer } from './binding';
import type { DType, ReduceOp, TensorArray } from './dtype';

/** Codec numbers on the wire and in native calls (native/core/codec.h); 0 = none. */
export const CODEC_CODES = { none: 0, uint8: 1, uint4: 2, float16: 3, bfloat16: 4 } as const;
export type CodecName = keyof typeof CODEC_CODES;

/** Quantized transport of float data (see docs/quantization.md). */
export interface QuantizationOptions {
  /** 'uint8' and 'uint4' use per-block min/scale; 'float16'/'bfloat16' are casts. */
  codec: Exclude<CodecName, 'none'>;
  /** Elements per block for uint8/uint4 (default 256). */
  blockSize?: number;
  /** Stochastic rounding instead of round-to-nearest (default false). */
  stochastic?: boolean;
  /** Seed of the stochastic rounding (default 0). */
  seed?: number;
}

/** Options of one all-reduce. */
export interface AllReduceOptions<T extends TensorArray = TensorArray> {
  /** Reduce operation (default 'sum'). */
  op?: ReduceOp;
  /** Element type; needed only for float16/bfloat16 in a Uint16Array. */
  dtype?: DType;
  /** Where the result goes; default: in place, into the input. Must have the input's type and length. */
  output?: T;
  /**
   * Identifies the operation among concurrent ones: every peer must use the same tag for the same operation,
   * and two operations in flight at once must use different tags. Default 0.
   */
  tag?: number;
  /** Aborts the operation (it rejects with AbortError; the input is left as it was). */
  signal?: AbortSignal;
  /** Fails with TimeoutError when the operation makes no progress for this long (default 30000; 0 = never). */
  timeoutMs?: number;
  /** Send float data quantized (sum and avg only). */
  quantization?: QuantizationOptions;
  /**
   * With op 'avg': this peer's weight (e.g. the tokens or samples of this step). The result is
   * sum(weight_i * x_i) / sum(weight_i) over the peers, bit-identical on every peer; float dtypes only (float16
   * and bfloat16 accumulate in float32), not quantized. A weight must be a finite number >= 0, and the total must
   * not be 0 (INVALID_ARGUMENT). Every peer of the operation passes a weight, or none does.
   */
  weight?: number;
  /**
   * 'ring' (bandwidth-optimal), 'direct' (every peer sends its whole input to every other: one network hop,
   * for small buffers, at most 1 MiB) or 'auto' (default: direct when this peer would send at most 64 KiB that way, i.e. up to
   * 64 KiB with 2 peers and up to 64 KiB / (N - 1) with N; ring above). Every peer must pass the same.
   */
  algorithm?: 'auto' | 'ring' | 'direct';
}

/** What an all-reduce reports. */
export interface AllReduceResult<T extends TensorArray = TensorArray> {
  /** The reduced values (the output array, which is the input unless `output` was given). */
  data: T;
  /** Number of peers whose inputs went into the result. */
  worldSize: number;
  bytesSent: number;
  bytesReceived: number;
}

/** One outgoing stream of an exchange. */
export interface ExchangeSend {
  /** Index of the destination peer in the configured group. */
  to: number;
  /** Stream id, agreed with the receiver; unique per destination within one exchange. */
  stream: number;
  /** The bytes to send (any TypedArray or Buffer; kept alive until the exchange settles). */
  data: ArrayBufferView;
}

/** One incoming stream of an exchange. */
export interface ExchangeRecv {
  /** Index of the source peer in the configured group. */
  from: number;
  /** Stream id, agreed with the sender; unique per source within one exchange. */
  stream: number;
  /** Written in place as the bytes arrive; its byte length must equal the sender's. */
  data: ArrayBufferView;
}

/** Options of one point-to-point exchange. */
export interface ExchangeOptions {
  sends?: ExchangeSend[];
  recvs?: ExchangeRecv[];
  /** Every peer taking part submits the same tag (default 0); concurrent operations use different tags. */
  tag?: number;
  /** Fails with TimeoutError when the exchange makes no progress for this long (default 30000; 0 = never). */
  timeoutMs?: number;
  /** Aborts the exchange (AbortError here and on the peers taking part). */
  signal?: AbortSignal;
}

/** What an exchange reports. */
export interface ExchangeResult {
  bytesSent: number;
  bytesReceived: number;
}

/** Anything with a host all-reduce: an Engine, a RingGroup, a Communicator (the GPU staging runs over it). */
export interface AllReduceTarget {
  allReduce(data: TensorArray, options?: AllReduceOptions<TensorArray>): Promise<{ worldSize: number; bytesSent: number; bytesReceived: number }>;
}

/**
 * What the Communicator needs of a data plane: the Engine, or a stand-in in tests. Host memory only (device
 * memory is staged above it).
 */
/** The kinds of collective beside all-reduce (native/core/chain.h). */
export const COLLECTIVE_KINDS = { allGather: 0, reduceScatter: 1, broadcast: 2 } as const;

/** One all-gather, reduce-scatter or broadcast on the data plane, already validated (lib/peer/ring-collectives.ts). */
export interface DataPlaneCollective {
  kind: keyof typeof COLLECTIVE_KINDS;
  input: TensorArray;
  /** The whole buffer; apart from input (a broadcast root may pass input: it only reads). */
  output: TensorArray;
  dtype: DType;
  op?: ReduceOp;
  root?: number;
  chunkCounts?: number[];
  tag: number;
  timeoutMs: number;
  signal?: AbortSignal;
}

export interface DataPlane {
  readonly port: number;
  /** Installs a group; in-flight operations of older epochs fail with PeerLostError. */
  configure(epoch: number, myIndex: number, peers: NativePeer[], ticket: Uint8Array, security?: LinkSecurity): void;
  allReduce<T extends TensorArray>(data: T, options?: AllReduceOptions<T>): Promise<AllReduceResult<T>>;
  exchange(options: ExchangeOptions): Promise<ExchangeResult>;
  collective(args: DataPlaneCollective): Promise<{ worldSize: number; bytesSent: number; bytesReceived: number }>;
  /** Fails the in-flight operation with `tag` here and tells the peers taking part. */
  abort(tag: number, message: string): void;
  close(): Promise<void>;
}

/** Options of the data-plane engine of one process. */
export interface EngineOptions {
  /** Address the data-plane listener binds (default '0.0.0.0'). */
  host?: string;
  /** Listen port (default 0: chosen by the OS). */
  port?: number;
  /** TCP connections per link (default 8). */
  connections?: number;
  /** Socket buffer size per connection in bytes (default 4 MiB). */
  socketBufferBytes?: number;
  /** Connect timeout per dial in ms (default 5000). */
  connectTimeoutMs?: number;
  /**
   * How long a peer that refuses or does not answer is dialled again, with back-off, before the group counts it
   * as lost (default 30000). Members of a static group may start in any order within this window.
   */
  connectRetryMs?: number;
  /**
   * Local address this engine's outgoing data-plane connections are bound to before they dial (default: the OS
   * picks by route). For a host with several addresses that must send from a particular one.
   */
  sourceAddress?: string;
  /**
   * Connections accepted on the data port that have not yet said a valid hello (default 512): past this many the
   * oldest is dropped, so a flood of silent connections holds a bounded number of descriptors (docs/security.md).
   */
  maxHandshakes?: number;
  /**
   * Bytes this engine holds for operations the other members started before it did (frames that arrive early,
   * remembered aborts), in total (default 2 GiB) and per member (`maxEarlyBytesPerPeer`, default 1 GiB). A member
   * that sends more is cut off and the group re-forms.
   */
  maxEarlyBytes?: number;
  maxEarlyBytesPerPeer?: number;
  /**
   * A data connection that breaks while no operation is in flight, after carrying no data for this long (default
   * 25000 ms), is dialled again without breaking the group (a NAT that dropped an idle mapping).
   */
  redialQuietMs?: number;
}

/** Defaults shared by every layer. */
export const DEFAULT_CONNECTIONS = 8;
export const DEFAULT_TIMEOUT_MS = 30_000;
export const DEFAULT_CONNECT_RETRY_MS = 30_000;
