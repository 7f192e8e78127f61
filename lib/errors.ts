/**
 * Errors thrown by TCCL: one vocabulary for the native engine, the control plane and the GPU path. Every error
 * has a stable `code` string; the class says what the caller should do. {@link errorFromCode} is the one table
 * from code to class (a code that arrives as a string, from native code or from the master, becomes the same
 * class everywhere), and {@link atCaller} is the one place that points a rejection at the caller's line.
 *
 * @example
 * ```ts
 * try {
 *   await comm.allReduce(grad);
 * } catch (err) {
 *   if (err instanceof PeerLostError) await comm.updateTopology(); // retry with the smaller world
 *   else throw err;
 * }
 * ```
 */
export class TcclError extends Error {
  /** Stable machine-readable code, e.g. `PEER_LOST`. */
  readonly code: string;
  /** True when retrying the operation (after the group re-forms) is expected to succeed. */
  readonly retryable: boolean;
  constructor(code: string, message: string, retryable = false, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.retryable = retryable;
  }
}

/** A peer of the operation died, hung or its link broke. Retry: the group re-forms without it. */
export class PeerLostError extends TcclError {
  /** Id (or `host:port`) of the peer that was lost, when known. */
  readonly peer?: string;
  constructor(message: string, peer?: string, options?: { cause?: unknown }) {
    super('PEER_LOST', message, true, options);
    this.peer = peer;
  }
}

/** A TcclError class whose instances all carry `code` and `retryable` (the subclass adds only its name and docs). */
function withCode(code: string, retryable: boolean) {
  return class extends TcclError {
    constructor(message: string, options?: { cause?: unknown }) {
      super(code, message, retryable, options);
    }
  };
}

/** The operation made no progress within its deadline. */
export class TimeoutError extends withCode('TIMEOUT', true) {}

/** The operation was aborted by an AbortSignal, by `close()`, or by another peer's abort. */
export class AbortError extends withCode('ABORTED', false) {}

/** Peers disagree on what the operation is (element count, dtype, reduce op, quantization). */
export class MismatchError extends withCode('MISMATCH', false) {}

/** Bytes on a socket did not follow the protocol (garbage, wrong version, oversized frame). */
export class ProtocolError extends withCode('PROTOCOL', false) {}

/**
 * A frame or message failed its integrity check (altered, replayed, reordered or dropped on the way): the
 * connection is dropped and re-established with new keys. Retry: the result is never computed from such bytes.
 */
export class IntegrityError extends withCode('INTEGRITY', true) {}

/** The run token or a connection ticket was missing or wrong. */
export class AuthError extends withCode('AUTH', false) {}

/** Fewer than two peers are left in the group: wait for peers to join, or stop. */
export class TooFewPeersError extends withCode('TOO_FEW_PEERS', false) {}

/** A broadcast's root left the group (died or was dropped): no survivor has its data; choose another root. */
export class RootLostError extends withCode('ROOT_LOST', false) {}

/** The communicator or group was closed (or this peer was dropped); create a new one. */
export class ClosedError extends withCode('CLOSED', false) {}

/** A state-related contract was broken (revision, content hash, checkpoint format). */
export class StateError extends TcclError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, false, options);
  }
}

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

/**
 * A bad argument: a TypeError (as JavaScript users expect of bad arguments) that also carries the stable
 * `INVALID_ARGUMENT` code, whether the JS layer or the native layer's own guard caught it.
 */
export class InvalidArgumentError extends TypeError {
  readonly code = 'INVALID_ARGUMENT';
  readonly retryable = false;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TypeError';
  }
}

type Make = (message: string, extra: { peer?: string; cause?: unknown; code: string }) => Error;

/** The one table from stable code to class. Codes not listed become a plain TcclError with that code. */
const BY_CODE: Readonly<Record<string, Make>> = {
  PEER_LOST: (m, x) => new PeerLostError(m, x.peer, x),
  TIMEOUT: (m, x) => new TimeoutError(m, x),
  ABORTED: (m, x) => new AbortError(m, x),
  MISMATCH: (m, x) => new MismatchError(m, x),
  PROTOCOL: (m, x) => new ProtocolError(m, x),
  AUTH: (m, x) => new AuthError(m, x),
  INTEGRITY: (m, x) => new IntegrityError(m, x),
  TOO_FEW_PEERS: (m, x) => new TooFewPeersError(m, x),
  CLOSED: (m, x) => new ClosedError(m, x),
  ROOT_LOST: (m, x) => new RootLostError(m, x),
  // The master's word for a session it no longer knows: to the caller, the communicator is closed.
  DROPPED: (m, x) => new ClosedError(m, x),
  INVALID_ARGUMENT: (m, x) => new InvalidArgumentError(m, x),
  CUDA_UNAVAILABLE: (m, x) => new CudaUnavailableError(m, x.code, x),
  NOT_BUILT: (m, x) => new CudaUnavailableError(m, x.code, x),
  NCCL_UNAVAILABLE: (m, x) => new CudaUnavailableError(m, x.code, x),
  CUDA_ERROR: (m, x) => new CudaError(m, x.code, x),
  NCCL_ERROR: (m, x) => new CudaError(m, x.code, x),
};

/** The error of a stable code, e.g. from a native rejection or a master's `opAbort` / `error` message. */
export function errorFromCode(code: string, message: string, extra: { peer?: string; cause?: unknown } = {}): Error {
  const make = BY_CODE[code];
  return make ? make(message, { ...extra, code }) : new TcclError(code, message, false, extra);
}

/**
 * Turns anything a native call rejected with (a plain Error carrying `code` and, for PEER_LOST, `peer`) into
 * the matching class; errors that already are TCCL's (or TypeErrors from argument checks) pass through.
 */
export function toTcclError(err: unknown): Error {
  if (err instanceof TcclError || err instanceof TypeError) return err;
  if (!(err instanceof Error)) return new TcclError('INTERNAL', String(err));
  const e = err as Error & { code?: unknown; peer?: unknown };
  if (typeof e.code !== 'string') return e;
  return errorFromCode(e.code, e.message, { peer: typeof e.peer === 'string' ? e.peer : undefined });
}

/**
 * The stack of the public call, captured before its first `await` (after one, the stack shows only the event
 * loop). `below` is the function whose frame and callees are left out (default: the caller of callSite).
 */
export function callSite(below: Function = callSite): string | undefined {
  const holder: { stack?: string } = {};
  Error.captureStackTrace(holder, below);
  return holder.stack;
}

/** Maps `err` with {@link toTcclError} and makes its stack the one captured by {@link callSite}. */
export function atCaller(err: unknown, site: string | undefined): Error {
  const out = toTcclError(err);
  if (site) out.stack = `${out.name}: ${out.message}\n${site.split('\n').slice(1).join('\n')}`;
  return out;
}

/**
 * Runs an asynchronous public method so that its rejection names the caller's line and carries the TCCL class
 * of its code. Call it synchronously at the start of the method: `return traced(async () => { ... })`.
 */
export function traced<T>(run: () => Promise<T>): Promise<T> {
  const site = callSite(traced);
  return run().catch((err: unknown) => {
    throw atCaller(err, site);
  });
}
