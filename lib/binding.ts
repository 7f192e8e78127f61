/**
 * The whole native surface in one place, typed: the CPU engine and kernels (native/addon/addon.cpp) and the GPU
 * part (native/addon/device.cpp). Only this file loads the addon; everything user-facing (validation, defaults,
 * error classes, retries) lives in the TypeScript built on top of it.
 *
 * Native calls throw, and native promises reject, with a plain Error carrying `code` (PEER_LOST, TIMEOUT,
 * ABORTED, MISMATCH, PROTOCOL, AUTH, CLOSED, INVALID_ARGUMENT; on the GPU path also CUDA_UNAVAILABLE, NOT_BUILT,
 * NCCL_UNAVAILABLE, CUDA_ERROR, NCCL_ERROR, FREED, INVALID_STATE) and, for PEER_LOST, `peer` (the lost peer's
 * id); `toTcclError` in errors.ts turns them into the exported classes.
 */
import * as path from 'node:path';

/** A member of a group as the data plane sees it. */
/**
 * The keys a ring's data-plane links are proven with (lib/peer/identity.ts): this process's X25519 identity and
 * every member's public key in ring order. Passed to `configure`; the native handshake does not use them yet
 * (docs/security.md, "Encryption": what is protected today).
 */
export interface LinkSecurity {
  identity: { publicKey: Uint8Array; privateKey: Uint8Array };
  peerKeys: Uint8Array[];
}

export interface NativePeer {
  /** Stable id used in error messages (e.g. `peer-3@10.0.0.5:41234`). */
  id: string;
  host: string;
  port: number;
}

export interface NativeEngineOptions {
  /** Address the data-plane listener binds (default 0.0.0.0). */
  host: string;
  /** Listen port; 0 lets the OS choose (read it back from `port`). */
  port: number;
  /** TCP connections per link (K). */
  connections: number;
  /** SO_SNDBUF/SO_RCVBUF per connection, bytes. */
  socketBufferBytes: number;
  /** Connect timeout per dial, ms. */
  connectTimeoutMs: number;
  /** How long a refused or unanswered dial is retried before the peer counts as lost, ms. */
  connectRetryMs: number;
  /** Local address outgoing connections are bound to (absent: the OS picks). */
  sourceAddress?: string;
  /** Accepted connections still in their hello; past it the oldest is dropped (default 512). */
  maxHandshakes?: number;
  /** Bytes held for operations not started here (early frames, remembered aborts), in total (default 2 GiB). */
  maxEarlyBytes?: number;
  /** The same, per peer (default 1 GiB). */
  maxEarlyBytesPerPeer?: number;
  /** A connection lost while idle this long, with nothing in flight, is dialled again (default 25000 ms). */
  redialQuietMs?: number;
}

/** Counters of the data-plane transport (native/core/transport.h, TransportStats). */
export interface NativeEngineStats {
  /** Accepted connections still in their hello. */
  handshakesPending: number;
  /** Connections refused: a bad hello, a wrong ticket, epoch or index, or no hello in time. */
  handshakesRefused: number;
  /** Connections dropped to keep the unauthenticated ones under maxHandshakes. */
  handshakesEvicted: number;
  /** Times accept() found no descriptor left. */
  acceptExhausted: number;
  /** Bytes held now for operations not started here. */
  earlyBytes: number;
  /** Connections closed for passing the early budget. */
  earlyRefused: number;
  /** Lost connections dialled again without breaking the group. */
  redials: number;
  /** Exceptions caught on a transport thread. */
  internalErrors: number;
}

export interface NativeQuantization {
  /** 1 = uint8, 2 = uint4, 3 = float16, 4 = bfloat16 (native/core/codec.h). */
  codec: number;
  blockSize: number;
  stochastic: boolean;
  seed: number;
}

export interface NativeAllReduceArgs {
  input: ArrayBufferView;
  /** Same object as input for in-place. */
  output: ArrayBufferView;
  dtype: number;
  op: number;
  tag: number;
  /** Fail with TIMEOUT after this many ms without progress; 0 = no deadline. */
  timeoutMs: number;
  quantization?: NativeQuantization;
  /** 0 = auto (direct when a peer sends at most 64 KiB that way), 1 = ring, 2 = direct. */
  algorithm?: number;
}

export interface NativeExchangeArgs {
  tag: number;
  timeoutMs: number;
  sends: { to: number; stream: number; data: ArrayBufferView }[];
  recvs: { from: number; stream: number; data: ArrayBufferView }[];
}

/** All-gather (0), reduce-scatter (1) or broadcast (2): native/core/chain.h. `output` holds the whole buffer. */
export interface NativeCollectiveArgs {
  kind: number;
  /** All-gather: this peer's part; reduce-scatter: the whole input; broadcast: the root's data (any on others). */
  input: ArrayBufferView;
  /** Apart from input, except a broadcast root's (same object: it only reads). */
  output: ArrayBufferView;
  dtype: number;
  op: number;
  /** Broadcast: the root's index in the group. */
  root: number;
  /** All-gather: elements of each peer's part, in ring order (sum = output elements). */
  chunkCounts?: number[];
  tag: number;
  timeoutMs: number;
}

export interface NativeOpResult {
  bytesSent: number;
  bytesReceived: number;
  worldSize: number;
}

export interface NativeEngine {
  /** The port the data-plane listener is bound to. */
  readonly port: number;
  /**
   * Installs a group: `epoch` strictly increases with every call; `peers` lists every member in ring order,
   * this process at `myIndex`; `ticket` (16 bytes) is what every member presents when dialling another, so a
   * connection without it is refused. In-flight operations of an older epoch fail with PEER_LOST.
   */
  configure(epoch: number, myIndex: number, peers: NativePeer[], ticket: Uint8Array, security?: LinkSecurity): void;
  allReduce(args: NativeAllReduceArgs): Promise<NativeOpResult>;
  /**
   * Point-to-point transfer under one tag: every `send` goes to peer index `to` as stream `stream`; every `recv`
   * expects stream `stream` from peer index `from` and is written straight into `data` (its byte length must match
   * the sender's). Both sides submit the same tag. Rejects like allReduce (PEER_LOST, TIMEOUT, MISMATCH, ...).
   */
  exchange(args: NativeExchangeArgs): Promise<NativeOpResult>;
  /** All-gather, reduce-scatter or broadcast around the ring; rejects like allReduce (MISMATCH names both sides). */
  collective(args: NativeCollectiveArgs): Promise<NativeOpResult>;
  /** Fails the in-flight operation with this tag here (ABORTED) and tells the other peers. */
  abort(tag: number, message: string): void;
  /** The transport's counters. */
  stats(): NativeEngineStats;
  /** Rejects every pending operation with CLOSED, closes every socket and joins the threads. */
  close(): Promise<void>;
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

/** A range of device memory, owned (allocate) or wrapped (someone else's pointer); reference counted natively. */
export interface NativeDeviceMemory {
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

/** One NCCL rank; `kind` 0 = all-reduce, 1 = reduce-scatter, 2 = all-gather. */
export interface NativeNcclCommunicator {
  init(id: Uint8Array, nranks: number, rank: number, device: number): Promise<void>;
  collective(kind: number, send: NativeDeviceMemory, recv: NativeDeviceMemory, count: number, dtype: number, op: number): Promise<void>;
  abort(): void;
  destroy(): Promise<void>;
}

export interface NativeAddon {
  Engine: new (options: NativeEngineOptions) => NativeEngine;
  /** dst = dst (op) src, element-wise; for tests and small arrays (runs on the calling thread). */
  reduceInto(dtype: number, op: number, dst: ArrayBufferView, src: ArrayBufferView): void;
  finishAverage(dtype: number, data: ArrayBufferView, divisor: number): void;
  /** Content hash (native/core/hash.h) of the bytes of a view, on a native thread. */
  contentHash(data: ArrayBufferView): Promise<bigint>;
  contentHashSync(data: ArrayBufferView): bigint;
  /** memmove(dst, src) on a worker thread (same byte length). */
  copyAsync(dst: ArrayBufferView, src: ArrayBufferView): Promise<void>;
  /** Codec round trip helpers (native/core/codec.h) for tests and benchmarks. */
  encodedSize(codec: number, count: number, blockSize: number): number;
  encode(codec: number, src: Float32Array, blockSize: number, stochastic: boolean, seed: number, out: Uint8Array): boolean;
  decode(codec: number, src: Uint8Array, count: number, blockSize: number, out: Float32Array): void;
  /** Build facts: compiler, whether CUDA support was compiled in. */
  buildInfo(): { compiler: string; cuda: boolean; napiVersion: number };

  // ---- GPU (native/addon/device.cpp); present in every build, failing with CUDA_UNAVAILABLE without CUDA ----
  DeviceMemory: new () => NativeDeviceMemory;
  NcclCommunicator: new () => NativeNcclCommunicator;
  /** Loads the CUDA runtime and NCCL on first call. */
  cudaInfo(): CudaInfo;
  /** Page-locked host memory for staged copies (cudaHostAlloc). */
  allocPinned(byteLength: number): Promise<ArrayBuffer>;
  freePinned(buffer: ArrayBuffer): void;
  deviceEncode(codec: number, src: NativeDeviceMemory, count: number, blockSize: number, stochastic: boolean, seed: number, out: NativeDeviceMemory): Promise<boolean>;
  deviceDecode(codec: number, src: NativeDeviceMemory, count: number, blockSize: number, out: NativeDeviceMemory, accumulate: boolean): Promise<void>;
  /** A fresh 128-byte NCCL unique id. */
  ncclUniqueId(): Uint8Array;
}

let cached: NativeAddon | undefined;

/** Loads the addon once (a prebuild from prebuilds/ or the local build/Release). */
export function native(): NativeAddon {
  if (!cached) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const load = require('node-gyp-build') as (dir: string) => NativeAddon;
    cached = load(path.join(__dirname, '..'));
  }
  return cached;
}
