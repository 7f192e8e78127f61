/**
 * The data-plane engine of one process: a listener plus links of K TCP connections to the other members of the
 * current group, driven by the native core. Both the static {@link RingGroup} and the master-driven
 * Communicator sit on it. It validates every argument before anything reaches native code.
 */
import { LinkSecurity, native, NativeEngine, NativeEngineStats, NativeOpResult, NativePeer, NativeQuantization } from './binding';
import {
  AllReduceOptions, AllReduceResult, CODEC_CODES, COLLECTIVE_KINDS, DataPlaneCollective, DEFAULT_CONNECTIONS, DEFAULT_CONNECT_RETRY_MS, DEFAULT_TIMEOUT_MS, EngineOptions,
  ExchangeOptions, ExchangeResult,
} from './collective';
import { DTYPE_CODES, REDUCE_OP_CODES, TensorArray, resolveDType, resolveReduceOp } from './dtype';
import { AbortError, ClosedError, InvalidArgumentError, traced } from './errors';
import { DeviceAllReduceOptions, DeviceAllReduceResult, DeviceBuffer, allReduceAny } from './device';
import { checkInt, checkString } from './validate';
import { accumulationType, checkWeighted, finishWeighted, weightedContribution } from './weighted';

export type {
  AllReduceOptions, AllReduceResult, EngineOptions, ExchangeOptions, ExchangeRecv, ExchangeResult, ExchangeSend,
  QuantizationOptions,
} from './collective';

/** Largest buffer `algorithm: 'direct'` takes (native/core/direct.h kDirectForcedMaxBytes). */
const DIRECT_MAX_BYTES = 1 << 20;
const ALGORITHM_CODES = { auto: 0, ring: 1, direct: 2 } as const;
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/** Native data-plane engine with argument validation and typed errors. */
export class Engine {
  private readonly impl: NativeEngine;
  private closed = false;

  private constructor(impl: NativeEngine) {
    this.impl = impl;
  }

  /**
   * Starts the listener.
   *
   * @example
   * ```ts
   * const engine = Engine.create({ host: '127.0.0.1', connections: 4 });
   * console.log(engine.port); // OS-chosen; share it with the other members, then configure()
   * ```
   */
  static create(options: EngineOptions = {}): Engine {
    const impl = new (native().Engine)({
      host: checkString('host', options.host ?? '0.0.0.0'),
      port: checkInt('port', options.port ?? 0, 0, 65535),
      connections: checkInt('connections', options.connections ?? DEFAULT_CONNECTIONS, 1, 256),
      socketBufferBytes: checkInt('socketBufferBytes', options.socketBufferBytes ?? 4 << 20, 0, 1 << 30),
      connectTimeoutMs: checkInt('connectTimeoutMs', options.connectTimeoutMs ?? 5000, 1, 600_000),
      connectRetryMs: checkInt('connectRetryMs', options.connectRetryMs ?? DEFAULT_CONNECT_RETRY_MS, 0, MAX_TIMEOUT_MS),
      sourceAddress: options.sourceAddress !== undefined ? checkString('sourceAddress', options.sourceAddress) : undefined,
      maxHandshakes: options.maxHandshakes !== undefined ? checkInt('maxHandshakes', options.maxHandshakes, 1, 1 << 20) : undefined,
      maxEarlyBytes: options.maxEarlyBytes !== undefined ? checkInt('maxEarlyBytes', options.maxEarlyBytes, 1) : undefined,
      maxEarlyBytesPerPeer: options.maxEarlyBytesPerPeer !== undefined ? checkInt('maxEarlyBytesPerPeer', options.maxEarlyBytesPerPeer, 1) : undefined,
      redialQuietMs: options.redialQuietMs !== undefined ? checkInt('redialQuietMs', options.redialQuietMs, 1, 0x7fffffff) : undefined,
    });
    return new Engine(impl);
  }

  /** The data-plane port this process listens on. */
  get port(): number {
    return this.impl.port;
  }

  /** Installs a group (see NativeEngine.configure). */
  configure(epoch: number, myIndex: number, peers: NativePeer[], ticket: Uint8Array = new Uint8Array(16), security?: LinkSecurity): void {
    this.checkOpen();
    checkInt('epoch', epoch, 0);
    checkInt('myIndex', myIndex, 0, peers.length - 1);
    if (!(ticket instanceof Uint8Array) || ticket.length !== 16) throw new InvalidArgumentError('Expected a 16-byte ticket');
    if (security) checkSecurity(security, peers.length);
    this.impl.configure(epoch, myIndex, peers, ticket, security);
  }

  /**
   * All-reduce over the current group. A {@link DeviceBuffer} (GPU memory) is staged through pinned host memory
   * with the same semantics (see docs/gpu.md).
   */
  allReduce(data: DeviceBuffer, options?: DeviceAllReduceOptions): Promise<DeviceAllReduceResult>;
  allReduce<T extends TensorArray>(data: T, options?: AllReduceOptions<T>): Promise<AllReduceResult<T>>;
  allReduce(data: TensorArray | DeviceBuffer, options?: object): Promise<unknown> {
    return allReduceAny(this, data, options, (d, o) => this.hostAllReduce(d, o));
  }

  private hostAllReduce<T extends TensorArray>(data: T, options: AllReduceOptions<T>): Promise<AllReduceResult<T>> {
    return traced(async () => {
      this.checkOpen();
      const dtype = resolveDType(data, options.dtype);
      const op = resolveReduceOp(options.op);
      const output = options.output ?? data;
      if (options.output !== undefined) {
        resolveDType(options.output, dtype, 'output');
        if (output.length !== data.length || output.constructor !== data.constructor) {
          throw new InvalidArgumentError(
            `Expected "output" to be a ${data.constructor.name} of length ${data.length}, got ${output.constructor.name} of length ${output.length}`,
          );
        }
        if (output !== data && overlaps(output, data)) {
          throw new InvalidArgumentError('"output" overlaps "data" without being the same array: pass the same array for in-place');
        }
      }
      const tag = checkInt('tag', options.tag ?? 0, 0);
      const timeoutMs = checkInt('timeoutMs', options.timeoutMs ?? DEFAULT_TIMEOUT_MS, 0, MAX_TIMEOUT_MS);
      let quantization: NativeQuantization | undefined;
      if (options.quantization) {
        const q = options.quantization;
        if (!(q.codec in CODEC_CODES) || (q.codec as string) === 'none') {
          throw new InvalidArgumentError(`Unknown quantization codec ${JSON.stringify(q.codec)}; expected uint8, uint4, float16 or bfloat16`);
        }
        if (!['float32', 'float64', 'float16', 'bfloat16'].includes(dtype)) {
          throw new InvalidArgumentError(`Quantization needs float data (float32, float64, float16, bfloat16), got ${dtype}`);
        }
        if (op !== 'sum' && op !== 'avg') throw new InvalidArgumentError(`Quantization supports the sum and avg ops only, got "${op}"`);
        quantization = {
          codec: CODEC_CODES[q.codec],
          blockSize: checkInt('quantization.blockSize', q.blockSize ?? 256, 2, 1 << 20),
          stochastic: Boolean(q.stochastic),
          seed: checkInt('quantization.seed', q.seed ?? 0, 0, 2 ** 32 - 1),
        };
      }
      if (options.algorithm !== undefined && !(options.algorithm in ALGORITHM_CODES)) {
        throw new InvalidArgumentError(`Unknown algorithm ${JSON.stringify(options.algorithm)}; expected auto, ring or direct`);
      }
      const weight = options.weight === undefined ? undefined : checkWeighted(options.weight, options.op, dtype, quantization !== undefined);
      // A weighted average sums [weight * x, weight] in one operation, then every peer divides the same bits.
      const input = weight === undefined ? data : await weightedContribution(data, dtype, weight);
      if (options.algorithm === 'direct' && input.byteLength > DIRECT_MAX_BYTES) {
        throw new InvalidArgumentError(
          `The direct algorithm sends a peer's whole buffer in one frame and takes at most 1 MiB, got ${input.byteLength} bytes: use 'ring' or 'auto'`,
        );
      }
      const r = await this.withAbort('All-reduce', tag, options.signal, () => this.impl.allReduce({
        input, output: input === data ? output : input, dtype: DTYPE_CODES[input === data ? dtype : accumulationType(dtype)],
        op: REDUCE_OP_CODES[input === data ? op : 'sum'], tag, timeoutMs, quantization, algorithm: ALGORITHM_CODES[options.algorithm ?? 'auto'],
      }));
      if (input !== data) await finishWeighted(input as Float32Array | Float64Array, dtype, output, r.worldSize);
      return { data: output, worldSize: r.worldSize, bytesSent: r.bytesSent, bytesReceived: r.bytesReceived };
    });
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
  exchange(options: ExchangeOptions): Promise<ExchangeResult> {
    return traced(async () => {
      this.checkOpen();
      if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('Expected exchange options {sends, recvs, tag}');
      const tag = checkInt('tag', options.tag ?? 0, 0);
      const timeoutMs = checkInt('timeoutMs', options.timeoutMs ?? DEFAULT_TIMEOUT_MS, 0, MAX_TIMEOUT_MS);
      const sends = streams('sends', 'to', options.sends);
      const recvs = streams('recvs', 'from', options.recvs);
      checkNoOverlap(sends, recvs);
      const r = await this.withAbort('Exchange', tag, options.signal, () => this.impl.exchange({
        tag, timeoutMs,
        sends: sends.map((s) => ({ to: s.peer, stream: s.stream, data: s.data })),
        recvs: recvs.map((s) => ({ from: s.peer, stream: s.stream, data: s.data })),
      }));
      return { bytesSent: r.bytesSent, bytesReceived: r.bytesReceived };
    });
  }

  /**
   * The data-plane part of an all-gather, reduce-scatter or broadcast (validated by the caller: the Communicator,
   * lib/peer/ring-collectives.ts); native/core picks the algorithm.
   */
  collective(args: DataPlaneCollective): Promise<NativeOpResult> {
    return traced(async () => {
      this.checkOpen();
      const { kind, input, output, dtype, tag, timeoutMs } = args;
      return this.withAbort(kind, tag, args.signal, () => this.impl.collective({
        kind: COLLECTIVE_KINDS[kind], input, output, dtype: DTYPE_CODES[dtype], op: REDUCE_OP_CODES[args.op ?? 'sum'],
        root: args.root ?? 0, chunkCounts: args.chunkCounts, tag, timeoutMs,
      }));
    });
  }

  /**
   * The data-plane transport's counters: connections in their hello, refused and evicted strangers, bytes held for
   * operations not started here, re-dialled connections.
   *
   * @example
   * ```ts
   * const { handshakesEvicted, earlyBytes } = engine.stats();
   * ```
   */
  stats(): NativeEngineStats {
    return this.impl.stats();
  }

  abort(tag: number, message = 'aborted'): void {
    if (!this.closed) this.impl.abort(tag, message);
  }

  /** Rejects pending operations with ClosedError and releases every socket and thread. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.impl.close();
  }

  private checkOpen(): void {
    if (this.closed) throw new ClosedError('The engine is closed');
  }

  /** Runs one native operation, aborting it (here and on the peers) when `signal` fires. */
  private async withAbort<R>(what: string, tag: number, signal: AbortSignal | undefined, run: () => Promise<R>): Promise<R> {
    if (signal?.aborted) throw new AbortError(`${what} (tag ${tag}) aborted before it started`, { cause: signal.reason });
    const onAbort = () => this.impl.abort(tag, abortMessage(signal?.reason));
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      return await run();
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }
}

interface Stream {
  peer: number;
  stream: number;
  data: ArrayBufferView;
  what: string;
}

/** Validates the sends (`to`) or recvs (`from`) of an exchange: indices, stream ids unique per peer, views. */
function streams(list: 'sends' | 'recvs', peerKey: 'to' | 'from', value: unknown): Stream[] {
  const items = value ?? [];
  if (!Array.isArray(items)) throw new InvalidArgumentError(`Expected "${list}" to be an array of {${peerKey}, stream, data}`);
  const seen = new Set<string>();
  return items.map((s: Record<string, unknown>, i) => {
    if (typeof s !== 'object' || s === null) throw new InvalidArgumentError(`Expected ${list}[${i}] to be {${peerKey}, stream, data}`);
    const peer = checkInt(`${list}[${i}].${peerKey}`, s[peerKey], 0, 1 << 20);
    const stream = checkInt(`${list}[${i}].stream`, s.stream, 0, 2 ** 32 - 1);
    const key = `${peer}/${stream}`;
    if (seen.has(key)) throw new InvalidArgumentError(`${list}[${i}] repeats stream ${stream} ${peerKey} peer ${peer}`);
    seen.add(key);
    if (!ArrayBuffer.isView(s.data)) {
      throw new InvalidArgumentError(`Expected ${list}[${i}].data to be a TypedArray or Buffer, got ${s.data === null ? 'null' : typeof s.data}`);
    }
    return { peer, stream, data: s.data, what: `${list}[${i}].data` };
  });
}

/**
 * Receive buffers are written by native threads while the exchange runs: none may overlap another receive buffer
 * or a send buffer (checked per underlying ArrayBuffer, sorted by offset).
 */
function checkNoOverlap(sends: Stream[], recvs: Stream[]): void {
  const byBuffer = new Map<ArrayBufferLike, { start: number; end: number; what: string; recv: boolean }[]>();
  const add = (s: Stream, recv: boolean) => {
    if (s.data.byteLength === 0) return;
    let list = byBuffer.get(s.data.buffer);
    if (!list) byBuffer.set(s.data.buffer, (list = []));
    list.push({ start: s.data.byteOffset, end: s.data.byteOffset + s.data.byteLength, what: s.what, recv });
  };
  recvs.forEach((r) => add(r, true));
  sends.forEach((s) => add(s, false));
  for (const list of byBuffer.values()) {
    if (!list.some((x) => x.recv)) continue;
    list.sort((a, b) => a.start - b.start);
    let widest = list[0];
    for (let i = 1; i < list.length; i++) {
      const cur = list[i];
      if (cur.start < widest.end && (cur.recv || widest.recv)) throw new InvalidArgumentError(`${widest.what} and ${cur.what} overlap`);
      if (cur.end > widest.end || (cur.recv && !widest.recv && cur.end === widest.end)) widest = cur;
    }
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

function checkSecurity(s: LinkSecurity, members: number): void {
  const key = (k: unknown) => k instanceof Uint8Array && k.length === 32;
  if (!key(s.identity?.publicKey) || !key(s.identity?.privateKey)) throw new InvalidArgumentError('Expected security.identity with 32-byte publicKey and privateKey');
  if (!Array.isArray(s.peerKeys) || s.peerKeys.length !== members || !s.peerKeys.every(key)) {
    throw new InvalidArgumentError(`Expected security.peerKeys: one 32-byte public key per member (${members})`);
  }
}
