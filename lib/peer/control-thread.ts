/**
 * A peer's control connections live in a worker thread (control-worker.ts), so heartbeats go on while this
 * thread is busy: a synchronous training step of 20 s is not a failure, a frozen process still is (docs/master.md,
 * "Liveness"). This file is the main thread's side: {@link ControlThread} starts the worker, ticks every
 * {@link TICK_MS} with the latest counters (the worker's proof that this thread runs, and what its heartbeats
 * carry), and hands out {@link RemoteConnection}s, which behave like a protocol Connection: frames are encoded
 * here (an oversized message still throws at the caller) and decoded messages come back as events.
 */
import { EventEmitter } from 'node:events';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { IntegrityError, ProtocolError } from '../errors';
import { DEFAULT_MAX_FRAME_BYTES, encodeFrame } from '../protocol/frame';
import type { AnyMsg } from '../protocol/messages';
import type { SessionKeys } from '../protocol/secure';
import type { PeerStats } from '../protocol/stats';

/** Main thread -> worker. */
export type ToWorker =
  | { t: 'open'; id: number; host: string; port: number }
  | { t: 'send' | 'end'; id: number; frame: Uint8Array }
  | { t: 'close'; id: number; reason?: string }
  | { t: 'heartbeat'; id: number; intervalMs: number; timeoutMs: number }
  | { t: 'secure'; id: number; tx: Uint8Array; rx: Uint8Array }
  | { t: 'tick'; stats?: Partial<PeerStats> }
  | { t: 'exit' };

/** Worker -> main thread. */
export type ToMain =
  | { t: 'connect'; id: number }
  | { t: 'msg'; id: number; msg: Record<string, unknown> }
  | { t: 'close'; id: number; reason?: { message: string; protocol: boolean; integrity?: boolean } };

/** How often this thread tells the worker it runs, ms. */
export const TICK_MS = 100;

/**
 * How long this thread may be silent before heartbeats say `busy`: well above a tick, and small enough that the
 * master hears it before a new ring's acknowledgement deadline (the peer timeout) passes.
 */
export function busyAfterMs(timeoutMs: number): number {
  return Math.min(1000, Math.max(250, Math.floor(timeoutMs / 4)));
}

/**
 * One worker's count of the master's messages: forwarded (the worker counts them in shared memory) and handled
 * here. A worker of its own, so that a failed worker's messages still queued for this thread can never unbalance
 * the counts of the worker started after it (which would leave this thread "behind" for good).
 */
interface Generation {
  readonly forwarded: Int32Array;
  delivered: number;
  /** False once the worker failed: its late messages are dropped (its connections are already closed). */
  live: boolean;
}

/** How long a closing worker may take to flush a goodbye before it is terminated, ms. */
const EXIT_GRACE_MS = 3000;

interface RemoteEvents {
  connect: [];
  message: [msg: Record<string, unknown>];
  close: [reason: Error | undefined];
}

/** One control connection held by the worker, as the main thread sees it. */
export class RemoteConnection extends EventEmitter<RemoteEvents> {
  private closed = false;

  constructor(private readonly thread: ControlThread, readonly id: number, private readonly maxFrameBytes = DEFAULT_MAX_FRAME_BYTES) {
    super();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Sends one message; quietly does nothing once the connection is closed. Throws if it exceeds the frame limit. */
  send(message: AnyMsg): void {
    if (!this.closed) this.post('send', message);
  }

  /** Sends a last message, then closes gracefully. */
  sendAndClose(message: AnyMsg): void {
    if (this.closed) return;
    this.post('end', message);
    this.finish(undefined);
  }

  /** Closes at once. */
  close(reason?: Error): void {
    if (this.closed) return;
    this.thread.post({ t: 'close', id: this.id, reason: reason?.message });
    this.finish(reason);
  }

  /** Heartbeats both ways, kept by the worker (see Connection.startHeartbeat); they carry the ticked counters. */
  startHeartbeat(intervalMs: number, timeoutMs: number): void {
    if (!this.closed) this.thread.post({ t: 'heartbeat', id: this.id, intervalMs, timeoutMs });
  }

  /** Every later frame both ways is sealed with these keys, by the worker that writes the socket (lib/protocol/secure.ts). */
  secure(keys: SessionKeys): void {
    if (!this.closed) this.thread.post({ t: 'secure', id: this.id, tx: keys.tx, rx: keys.rx });
  }

  /** @internal The worker closed it. */
  finish(reason: Error | undefined): void {
    if (this.closed) return;
    this.closed = true;
    this.thread.forget(this.id);
    this.emit('close', reason);
  }

  private post(t: 'send' | 'end', message: AnyMsg): void {
    // A copy of its own, so its memory moves to the worker instead of being cloned (encodeFrame may use a pool).
    const frame = new Uint8Array(encodeFrame(message, this.maxFrameBytes));
    this.thread.post({ t, id: this.id, frame }, [frame.buffer as ArrayBuffer]);
  }
}

/**
 * The worker thread and its connections. Started on the first {@link connect} (and again after a failure of the
 * worker, which closes its connections with the reason); {@link shutdown} lets it finish and end.
 */
export class ControlThread {
  private worker?: Worker;
  private ticker?: NodeJS.Timeout;
  private readonly links = new Map<number, RemoteConnection>();
  private nextId = 1;
  private exiting?: Promise<void>;
  /** The running worker's counts; none while no worker runs or once it is told to exit. */
  private gen?: Generation;
  private catchUp = new Set<() => void>();

  /** `stats`: the counters every heartbeat carries, read at each tick. */
  constructor(private readonly stats?: () => Partial<PeerStats>) {}

  /** Opens a connection to `host:port` in the worker; listen for `connect`, `message` and `close`. */
  connect(host: string, port: number): RemoteConnection {
    const link = new RemoteConnection(this, this.nextId++);
    this.links.set(link.id, link);
    let worker: Worker;
    try {
      worker = this.start();
    } catch (err) {
      const reason = new Error(`Cannot start the control connection's worker thread: ${(err as Error).message}`, { cause: err });
      queueMicrotask(() => link.finish(reason));
      return link;
    }
    worker.postMessage({ t: 'open', id: link.id, host, port } satisfies ToWorker);
    return link;
  }

  /**
   * Whether messages of the master are waiting for this thread (it was busy while they came): what this thread
   * believes of its group may be out of date, so no operation should start on it.
   */
  behind(): boolean {
    const g = this.gen;
    return g !== undefined && Atomics.load(g.forwarded, 0) !== g.delivered;
  }

  /**
   * Resolves once every message the worker has forwarded so far was handled here (or that worker is gone).
   * `signal` withdraws the wait (it then never settles): the caller owns the deadline and the error.
   */
  caughtUp(signal?: AbortSignal): Promise<void> {
    if (!this.behind()) return Promise.resolve();
    return new Promise((resolve) => {
      if (signal?.aborted) return;
      const wake = () => {
        signal?.removeEventListener('abort', withdraw);
        resolve();
      };
      const withdraw = () => this.catchUp.delete(wake);
      signal?.addEventListener('abort', withdraw, { once: true });
      this.catchUp.add(wake);
    });
  }

  /** @internal */
  post(m: ToWorker, transfer?: ArrayBuffer[]): void {
    this.worker?.postMessage(m, transfer);
  }

  /** @internal */
  forget(id: number): void {
    this.links.delete(id);
  }

  /** Ends the worker once its sockets have finished (a goodbye is flushed), or after a grace period. */
  shutdown(): Promise<void> {
    if (this.exiting) return this.exiting;
    const worker = this.worker;
    this.stopTicking();
    this.worker = undefined;
    // No operation starts after shutdown: nobody waits for the exiting worker's messages.
    this.gen = undefined;
    this.wakeCaughtUp();
    if (!worker) return (this.exiting = Promise.resolve());
    this.exiting = new Promise<void>((resolve) => {
      // Both stay referenced: a caller awaiting close() must see it settle, not have its process end first.
      const timer = setTimeout(() => void worker.terminate(), EXIT_GRACE_MS);
      worker.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    worker.postMessage({ t: 'exit' } satisfies ToWorker);
    return this.exiting;
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    // The same folder: compiled, the worker starts from its file (CommonJS, whatever the caller's module system);
    // TypeScript source (tests and benches run lib/ through tsx, whose loader a worker does not always inherit),
    // from a line that registers tsx's CommonJS hook first.
    const file = path.join(__dirname, `control-worker${path.extname(__filename)}`);
    const gen: Generation = { forwarded: new Int32Array(new SharedArrayBuffer(4)), delivered: 0, live: true };
    this.gen = gen;
    const workerData = { tcclControl: true, forwarded: gen.forwarded };
    const worker = file.endsWith('.ts')
      ? new Worker(`require('tsx/cjs'); require(${JSON.stringify(file)});`, { eval: true, workerData })
      : new Worker(file, { workerData });
    this.worker = worker;
    worker.on('message', (m: ToMain) => this.onMessage(gen, m));
    const failed = (why: string) => {
      if (this.worker !== worker) return;
      this.worker = undefined;
      this.stopTicking();
      const reason = new Error(`The control connection's worker thread ${why}`);
      gen.live = false;
      if (this.gen === gen) this.gen = undefined;
      this.wakeCaughtUp();
      for (const link of [...this.links.values()]) link.finish(reason);
    };
    worker.on('error', (err) => failed(`failed: ${err.message}`));
    worker.on('exit', (code) => failed(`exited (code ${code})`));
    this.ticker = setInterval(() => this.tick(), TICK_MS);
    this.ticker.unref();
    this.tick();
    return worker;
  }

  private tick(): void {
    this.post({ t: 'tick', stats: this.stats?.() });
  }

  private stopTicking(): void {
    if (this.ticker) clearInterval(this.ticker);
    this.ticker = undefined;
  }

  private onMessage(gen: Generation, m: ToMain): void {
    if (!gen.live) return;
    if (m.t === 'msg') gen.delivered = (gen.delivered + 1) | 0;
    const link = this.links.get(m.id);
    if (link) {
      if (m.t === 'connect') link.emit('connect');
      else if (m.t === 'msg') link.emit('message', m.msg);
      else link.finish(m.reason && closeReason(m.reason));
    }
    if (m.t === 'msg') this.wakeCaughtUp();
  }

  private wakeCaughtUp(): void {
    if (this.behind() || this.catchUp.size === 0) return;
    const waiting = [...this.catchUp];
    this.catchUp.clear();
    for (const wake of waiting) wake();
  }
}

function closeReason(r: { message: string; protocol: boolean; integrity?: boolean }): Error {
  if (r.integrity) return new IntegrityError(r.message);
  return r.protocol ? new ProtocolError(r.message) : new Error(r.message);
}
