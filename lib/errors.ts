/**
 * Errors thrown by TCCL. Every error has a stable `code` string; the subclass says what the caller should do.
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

/** The operation made no progress within its deadline. */
export class TimeoutError extends TcclError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('TIMEOUT', message, true, options);
  }
}

/** The operation was aborted by an AbortSignal, by `close()`, or by another peer's abort. */
export class AbortError extends TcclError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ABORTED', message, false, options);
  }
}

/** Peers disagree on what the operation is (element count, dtype, reduce op, quantization). */
export class MismatchError extends TcclError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('MISMATCH', message, false, options);
  }
}

/** Bytes on a socket did not follow the protocol (garbage, wrong version, oversized frame). */
export class ProtocolError extends TcclError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PROTOCOL', message, false, options);
  }
}

/** The run token or a connection ticket was missing or wrong. */
export class AuthError extends TcclError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('AUTH', message, false, options);
  }
}

/** Fewer than two peers are left in the group: wait for peers to join, or stop. */
export class TooFewPeersError extends TcclError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('TOO_FEW_PEERS', message, false, options);
  }
}

/** The communicator or group was closed; create a new one. */
export class ClosedError extends TcclError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CLOSED', message, false, options);
  }
}

/** A state-related contract was broken (revision, content hash, checkpoint format). */
export class StateError extends TcclError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, false, options);
  }
}

/**
 * Turns an error rejected by the native addon (a plain Error with `code` and optional `peer`) into the matching
 * TCCL class. `stack` is the stack captured before the native call, so the error points at the caller's line.
 */
export function fromNativeError(err: unknown, stack?: string): Error {
  if (!(err instanceof Error)) return new TcclError('INTERNAL', String(err));
  const e = err as Error & { code?: string; peer?: string };
  let out: Error;
  switch (e.code) {
    case 'PEER_LOST': out = new PeerLostError(e.message, e.peer); break;
    case 'TIMEOUT': out = new TimeoutError(e.message); break;
    case 'ABORTED': out = new AbortError(e.message); break;
    case 'MISMATCH': out = new MismatchError(e.message); break;
    case 'PROTOCOL': out = new ProtocolError(e.message); break;
    case 'AUTH': out = new AuthError(e.message); break;
    case 'CLOSED': out = new ClosedError(e.message); break;
    case 'INVALID_ARGUMENT': out = new TypeError(e.message); break;
    default: return e;
  }
  if (stack) out.stack = `${out.name}: ${out.message}\n${stack.split('\n').slice(1).join('\n')}`;
  return out;
}
