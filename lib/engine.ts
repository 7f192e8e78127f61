/**
 * The data-plane engine of one process: a listener plus links of K TCP connections to the other members of the
 * current group, driven by the native core. Both the static {@link RingGroup} and the master-driven
 * Communicator sit on it. It validates every argument before anything reaches native code.
 */
import { native, NativeEngine, NativePeer } from './binding';
import { DType, DTYPE_CODES, REDUCE_OP_CODES, ReduceOp, TensorArray, resolveDType, resolveReduceOp } from './dtype';
import { AbortError, ClosedError, fromNativeError } from './errors';
import { DeviceAllReduceOptions, DeviceAllReduceResult, DeviceBuffer, allReduceDevice } from './device';

/** Quantized transport of float data (see docs/quantization.md). */
export interface QuantizationOptions {
  /** 'uint8' and 'uint4' use per-block min/scale; 'float16'/'bfloat16' are casts. */
  codec: 'uint8' | 'uint4' | 'float16' | 'bfloat16';
  /** Elements per block for uint8/uint4 (default 256). */
  blockSize?: number;
  /** Stochastic rounding instead of round-to-nearest (default false). */
  stochastic?: boolean;
  /** Seed of the stochastic rounding (default 0). */
  seed?: number;
}

export const CODEC_CODES = { uint8: 1, uint4: 2, float16: 3, bfloat16: 4 } as const;
const ALGORITHM_CODES = { auto: 0, ring: 1, direct: 2 } as const;

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
   * 'ring' (bandwidth-optimal), 'direct' (every peer sends its whole input to every other: one network hop,
   * for small buffers) or 'auto' (default: direct when this peer would send at most 64 KiB that way, i.e. up to
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

/** One outgoing stream of {@link Engine.exchange}. */
export interface ExchangeSend {
  /** Index of the destination peer in the configured group. */
  to: number;
  /** Stream id, agreed with the receiver; unique per destination within one exchange. */
  stream: number;
  /** The bytes to send (any TypedArray or Buffer; kept alive until the exchange settles). */
  data: ArrayBufferView;
}

/** One incoming stream of {@link Engine.exchange}. */
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
}

export const DEFAULT_CONNECTIONS = 8;
export const DEFAULT_TIMEOUT_MS = 30_000;
export const DEFAULT_CONNECT_RETRY_MS = 30_000;

function checkInteger(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new TypeError(`Expected the "${name}" option to be an integer from ${min} to ${max}, got ${String(v)}`);
  }
  return v;
}

/** Native data-plane engine with argument validation and typed errors. */
export class Engine {
  private readonly impl: NativeEngine;
  private closed = false;

  private constructor(impl: NativeEngine) {
    this.impl = impl;
  }

  /** Starts the listener. */
  static create(options: EngineOptions = {}): Engine {
    const host = options.host ?? '0.0.0.0';
    if (typeof host !== 'string' || host.length === 0) throw new TypeError('Expected the "host" option to be a non-empty string');
    const impl = new (native().Engine)({
      host,
      port: checkInteger('port', options.port ?? 0, 0, 65535),
      connections: checkInteger('connections', options.connections ?? DEFAULT_CONNECTIONS, 1, 256),
      socketBufferBytes: checkInteger('socketBufferBytes', options.socketBufferBytes ?? 4 << 20, 0, 1 << 30),
      connectTimeoutMs: checkInteger('connectTimeoutMs', options.connectTimeoutMs ?? 5000, 1, 600_000),
      connectRetryMs: checkInteger('connectRetryMs', options.connectRetryMs ?? DEFAULT_CONNECT_RETRY_MS, 0, 2 ** 31 - 1),
    });
    return new Engine(impl);
  }

  /** The data-plane port this process listens on. */
  get port(): number {
    return this.impl.port;
  }

  /** Installs a group (see NativeEngine.configure). */
  configure(epoch: number, myIndex: number, peers: NativePeer[], ticket: Uint8Array = new Uint8Array(16)): void {
    if (this.closed) throw new ClosedError('The engine is closed');
    checkInteger('epoch', epoch, 0, Number.MAX_SAFE_INTEGER);
    checkInteger('myIndex', myIndex, 0, peers.length - 1);
    if (!(ticket instanceof Uint8Array) || ticket.length !== 16) throw new TypeError('Expected a 16-byte ticket');
    this.impl.configure(epoch, myIndex, peers, ticket);
  }

  /**
   * All-reduce over the current group. A {@link DeviceBuffer} (GPU memory) is staged through pinned host memory
   * with the same semantics (see docs/gpu.md).
   */
  allReduce(data: DeviceBuffer, options?: DeviceAllReduceOptions): Promise<DeviceAllReduceResult>;
  allReduce<T extends TensorArray>(data: T, options?: AllReduceOptions<T>): Promise<AllReduceResult<T>>;
  async allReduce(data: TensorArray | DeviceBuffer, options: object = {}): Promise<unknown> {
    if (data instanceof DeviceBuffer) return allReduceDevice(this, data, options as DeviceAllReduceOptions);
    return this.hostAllReduce(data, options as AllReduceOptions);
  }

  private async hostAllReduce<T extends TensorArray>(data: T, options: AllReduceOptions<T>): Promise<AllReduceResult<T>> {
    const stack = new Error().stack;
    if (this.closed) throw new ClosedError('The engine is closed');
    const dtype = resolveDType(data, options.dtype);
    const op = resolveReduceOp(options.op);
    const output = options.output ?? data;
    if (options.output !== undefined) {
      resolveDType(options.output, dtype, 'output');
      if (output.length !== data.length || output.constructor !== data.constructor) {
        throw new TypeError(
          `Expected "output" to be a ${data.constructor.name} of length ${data.length}, got ${output.constructor.name} of length ${output.length}`,
        );
      }
      if (output !== data && overlaps(output, data)) {
        throw new TypeError('"output" overlaps "data" without being the same array: pass the same array for in-place');
      }
    }
    const tag = checkInteger('tag', options.tag ?? 0, 0, Number.MAX_SAFE_INTEGER);
    const timeoutMs = checkInteger('timeoutMs', options.timeoutMs ?? DEFAULT_TIMEOUT_MS, 0, 2 ** 31 - 1);
    let quantization;
    if (options.quantization) {
      const q = options.quantization;
      if (!(q.codec in CODEC_CODES)) {
        throw new TypeError(`Unknown quantization codec ${JSON.stringify(q.codec)}; expected uint8, uint4, float16 or bfloat16`);
      }
      if (!['float32', 'float64', 'float16', 'bfloat16'].includes(dtype)) {
        throw new TypeError(`Quantization needs float data (float32, float64, float16, bfloat16), got ${dtype}`);
      }
      if (op !== 'sum' && op !== 'avg') {
        throw new TypeError(`Quantization supports the sum and avg ops only, got "${op}"`);
      }
      quantization = {
        codec: CODEC_CODES[q.codec],
        blockSize: checkInteger('quantization.blockSize', q.blockSize ?? 256, 2, 1 << 20),
        stochastic: Boolean(q.stochastic),
        seed: checkInteger('quantization.seed', q.seed ?? 0, 0, 2 ** 32 - 1),
      };
    }
    if (options.algorithm !== undefined && !(options.algorithm in ALGORITHM_CODES)) {
      throw new TypeError(`Unknown algorithm ${JSON.stringify(options.algorithm)}; expected auto, ring or direct`);
    }
    const signal = options.signal;
    if (signal?.aborted) throw new AbortError(`All-reduce (tag ${tag}) aborted before it started`, { cause: signal.reason });
    const onAbort = () => this.impl.abort(tag, abortMessage(signal?.reason));
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const r = await this.impl.allReduce({
        input: data,
        output,
        dtype: DTYPE_CODES[dtype],
        op: REDUCE_OP_CODES[op],
        tag,
        timeoutMs,
        quantization,
        algorithm: ALGORITHM_CODES[options.algorithm ?? 'auto'],
      });
      return { data: output, worldSize: r.worldSize, bytesSent: r.bytesSent, bytesReceived: r.bytesReceived };
    } catch (err) {
      throw fromNativeError(err, stack);
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Point-to-point transfer under one tag: each send goes to peer `to` as stream `stream`, striped over every
   * connection of the link; each recv is written straight into its `data` as the bytes arrive. Every peer that
   * takes part submits the same tag. Rejects with PeerLostError (a peer of the group died), TimeoutError,
   * AbortError or MismatchError (a sender and a receiver disagree on a stream's length); after a rejection the
   * receive buffers hold unspecified bytes.
   *
   * @example
   * ```ts
   * // peer 0                                             // peer 1
   * await engine.exchange({ tag: 9, sends: [{ to: 1, stream: 0, data: weights }] });
   *                                                       await engine.exchange({ tag: 9, recvs: [{ from: 0, stream: 0, data: scratch }] });
   * ```
   */
  async exchange(options: ExchangeOptions): Promise<ExchangeResult> {
    const stack = new Error().stack;
    if (this.closed) throw new ClosedError('The engine is closed');
    if (typeof options !== 'object' || options === null) throw new TypeError('Expected exchange options {sends, recvs, tag}');
    const sends = options.sends ?? [];
    const recvs = options.recvs ?? [];
    if (!Array.isArray(sends)) throw new TypeError('Expected "sends" to be an array of {to, stream, data}');
    if (!Array.isArray(recvs)) throw new TypeError('Expected "recvs" to be an array of {from, stream, data}');
    const tag = checkInteger('tag', options.tag ?? 0, 0, Number.MAX_SAFE_INTEGER);
    const timeoutMs = checkInteger('timeoutMs', options.timeoutMs ?? DEFAULT_TIMEOUT_MS, 0, 2 ** 31 - 1);
    const checkView = (v: unknown, what: string): ArrayBufferView => {
      if (!ArrayBuffer.isView(v)) throw new TypeError(`Expected ${what} to be a TypedArray or Buffer, got ${v === null ? 'null' : typeof v}`);
      return v;
    };
    const seenSend = new Set<string>();
    const nativeSends = sends.map((s, i) => {
      if (typeof s !== 'object' || s === null) throw new TypeError(`Expected sends[${i}] to be {to, stream, data}`);
      const to = checkInteger(`sends[${i}].to`, s.to, 0, 1 << 20);
      const stream = checkInteger(`sends[${i}].stream`, s.stream, 0, 2 ** 32 - 1);
      const key = `${to}/${stream}`;
      if (seenSend.has(key)) throw new TypeError(`sends[${i}] repeats stream ${stream} to peer ${to}`);
      seenSend.add(key);
      return { to, stream, data: checkView(s.data, `sends[${i}].data`) };
    });
    const seenRecv = new Set<string>();
    const nativeRecvs = recvs.map((r, i) => {
      if (typeof r !== 'object' || r === null) throw new TypeError(`Expected recvs[${i}] to be {from, stream, data}`);
      const from = checkInteger(`recvs[${i}].from`, r.from, 0, 1 << 20);
      const stream = checkInteger(`recvs[${i}].stream`, r.stream, 0, 2 ** 32 - 1);
      const key = `${from}/${stream}`;
      if (seenRecv.has(key)) throw new TypeError(`recvs[${i}] repeats stream ${stream} from peer ${from}`);
      seenRecv.add(key);
      return { from, stream, data: checkView(r.data, `recvs[${i}].data`) };
    });
    // Receive buffers are written by native threads while the exchange runs: none may overlap another receive
    // buffer or a send buffer (checked per underlying ArrayBuffer, sorted by offset).
    const byBuffer = new Map<ArrayBufferLike, { start: number; end: number; what: string; recv: boolean }[]>();
    const addRange = (v: ArrayBufferView, what: string, recv: boolean) => {
      if (v.byteLength === 0) return;
      let list = byBuffer.get(v.buffer);
      if (!list) byBuffer.set(v.buffer, (list = []));
      list.push({ start: v.byteOffset, end: v.byteOffset + v.byteLength, what, recv });
    };
    nativeRecvs.forEach((r, i) => addRange(r.data, `recvs[${i}].data`, true));
    nativeSends.forEach((s, i) => addRange(s.data, `sends[${i}].data`, false));
    for (const list of byBuffer.values()) {
      if (!list.some((x) => x.recv)) continue;
      list.sort((a, b) => a.start - b.start);
      let widest = list[0];
      for (let i = 1; i < list.length; i++) {
        const cur = list[i];
        if (cur.start < widest.end && (cur.recv || widest.recv)) throw new TypeError(`${widest.what} and ${cur.what} overlap`);
        if (cur.end > widest.end || (cur.recv && !widest.recv && cur.end === widest.end)) widest = cur;
      }
    }
    const signal = options.signal;
    if (signal?.aborted) throw new AbortError(`Exchange (tag ${tag}) aborted before it started`, { cause: signal.reason });
    const onAbort = () => this.impl.abort(tag, abortMessage(signal?.reason));
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const r = await this.impl.exchange({ tag, timeoutMs, sends: nativeSends, recvs: nativeRecvs });
      return { bytesSent: r.bytesSent, bytesReceived: r.bytesReceived };
    } catch (err) {
      throw fromNativeError(err, stack);
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Fails the in-flight operation with `tag` on this peer and tells the others. */
  abort(tag: number, message = 'aborted'): void {
    if (!this.closed) this.impl.abort(tag, message);
  }

  /** Rejects pending operations with ClosedError and releases every socket and thread. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.impl.close();
  }
}

function overlaps(a: ArrayBufferView, b: ArrayBufferView): boolean {
  if (a.buffer !== b.buffer) return false;
  return a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}

function abortMessage(reason: unknown): string {
  if (reason instanceof Error) return reason.message;
  if (reason === undefined) return 'aborted by AbortSignal';
  return String(reason);
}
