/**
 * One control connection: frames in and out over a net.Socket, strict decoding, heartbeats both ways and a
 * liveness deadline. Used by both the master and the communicator.
 */
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import { IntegrityError, ProtocolError } from '../errors';
import { DEFAULT_MAX_FRAME_BYTES, FrameDecoder, encodeFrame } from './frame';
import { AnyMsg, Msg, validateMessage } from './messages';
import { monotonicMs } from '../clock';
import { FrameSealer, SessionKeys, TAG_BYTES } from './secure';

export interface ConnectionEvents {
  message: [msg: Record<string, unknown>];
  /** A validated heartbeat (it may carry the peer's counters). */
  heartbeat: [msg: Msg<'hb'>];
  /** The connection is gone; `reason` says why (closed by the other side, protocol error, silence...). */
  close: [reason: Error | undefined];
}

/** Strips the IPv4-mapped IPv6 prefix so peers see `127.0.0.2`, not `::ffff:127.0.0.2`. */
export function plainAddress(addr: string | undefined): string {
  if (!addr) return '';
  return addr.startsWith('::ffff:') && addr.includes('.') ? addr.slice(7) : addr;
}

export class Connection extends EventEmitter<ConnectionEvents> {
  private readonly decoder: FrameDecoder;
  private closed = false;
  private lastRx = monotonicMs();
  private lastTick = monotonicMs();
  private hbTimer?: NodeJS.Timeout;
  private sealer?: FrameSealer;
  /** The other side said a frame of ours failed its tag (an `integrity` message): the close that follows is one. */
  private tampered?: IntegrityError;
  readonly remoteAddress: string;
  readonly remotePort: number;

  constructor(readonly socket: net.Socket, private readonly maxFrameBytes = DEFAULT_MAX_FRAME_BYTES) {
    super();
    this.decoder = new FrameDecoder(maxFrameBytes);
    this.remoteAddress = plainAddress(socket.remoteAddress);
    this.remotePort = socket.remotePort ?? 0;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.shutdown(err));
    socket.on('close', () => this.shutdown(undefined));
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** True once {@link secure} was called: every frame both ways is sealed. */
  get sealed(): boolean {
    return this.sealer !== undefined;
  }

  /**
   * From now on, seals every frame sent and opens every frame received with these keys (lib/protocol/secure.ts).
   * Frames already received and not yet read are opened too: call it in the handler of the last plain message.
   */
  secure(keys: SessionKeys): void {
    const sealer = (this.sealer = new FrameSealer(keys));
    this.decoder.sealOverhead = TAG_BYTES;
    this.decoder.opener = (header, body) => sealer.open(header, body);
  }

  /**
   * Sends one message; quietly does nothing once the connection is closed. `frame`: the message already encoded
   * (one message sent to many peers is encoded once).
   */
  send(message: AnyMsg, frame?: Buffer): void {
    if (this.closed) return;
    this.write(frame ?? encodeFrame(message, this.maxFrameBytes));
  }

  /** Sends a frame encoded elsewhere (by a peer's main thread: lib/peer/control-thread.ts). */
  sendFrame(frame: Uint8Array): void {
    if (!this.closed) this.write(frame);
  }

  /** Sends a last message, then closes gracefully. */
  sendAndClose(message: AnyMsg | Uint8Array, reason?: Error): void {
    if (this.closed) return;
    let last: Uint8Array;
    try {
      last = this.outgoing(this.frame(message));
    } catch (err) {
      return this.shutdown(err as Error);
    }
    this.socket.end(last);
    this.shutdown(reason, false);
    // If the other side never reads, do not keep the socket forever.
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  /**
   * Sends a heartbeat every `intervalMs` and declares the other side dead after `timeoutMs` without any frame.
   * A tick that fires far too late means this process itself was frozen (SIGSTOP, a blocked event loop): the
   * deadline restarts then, so buffered frames are read before the other side is judged. `onSilent` replaces
   * the default action (closing the connection); `content`, when given, fills every heartbeat sent (a peer's
   * counters, whether its main thread is busy: lib/peer/control-worker.ts).
   */
  startHeartbeat(intervalMs: number, timeoutMs: number, onSilent?: (reason: Error) => void, content?: () => Omit<Msg<'hb'>, 't'>): void {
    this.stopHeartbeat();
    this.lastRx = monotonicMs();
    this.lastTick = monotonicMs();
    const tick = Math.max(10, Math.min(intervalMs, Math.floor(timeoutMs / 4)));
    this.hbTimer = setInterval(() => {
      const now = monotonicMs();
      const late = now - this.lastTick > Math.max(3 * tick, tick + 250);
      this.lastTick = now;
      this.send({ t: 'hb', ...content?.() });
      if (late) {
        this.lastRx = Math.max(this.lastRx, now - Math.floor(timeoutMs / 2));
        return;
      }
      if (now - this.lastRx > timeoutMs) {
        const reason = new Error(`no heartbeat for ${now - this.lastRx} ms (timeout ${timeoutMs} ms)`);
        this.stopHeartbeat();
        if (onSilent) onSilent(reason);
        else this.close(reason);
      }
    }, tick);
    this.hbTimer.unref();
  }

  stopHeartbeat(): void {
    if (this.hbTimer) clearInterval(this.hbTimer);
    this.hbTimer = undefined;
  }

  /** Changes the largest frame accepted from now on (the master keeps it small until the peer authenticates). */
  limitFrames(maxFrameBytes: number): void {
    this.decoder.maxFrameBytes = maxFrameBytes;
  }

  /** Closes at once. */
  close(reason?: Error): void {
    this.shutdown(reason);
  }

  /** Writes a plain frame, sealed when the connection is; a frame that cannot be sealed closes the connection. */
  private write(frame: Uint8Array): void {
    try {
      this.socket.write(this.outgoing(frame));
    } catch (err) {
      this.shutdown(err as Error);
    }
  }

  private outgoing(frame: Uint8Array): Uint8Array {
    return this.sealer ? this.sealer.seal(frame) : frame;
  }

  private frame(message: AnyMsg | Uint8Array): Uint8Array {
    return message instanceof Uint8Array ? message : encodeFrame(message, this.maxFrameBytes);
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    // Unsealed, any byte counts as life; sealed, only a whole frame: a length altered on the way would otherwise
    // keep the connection alive on a trickle of heartbeats that never completes the frame it announced.
    if (!this.sealer) this.lastRx = monotonicMs();
    this.decoder.feed(chunk);
    // One message at a time: a handler may switch the decoder to sealed frames between two frames of one chunk.
    for (;;) {
      if (this.closed) return;
      let m: Record<string, unknown> | undefined;
      try {
        m = this.decoder.next();
      } catch (err) {
        this.shutdown(err as Error);
        return;
      }
      if (!m) return;
      this.lastRx = monotonicMs();
      if (m.t === 'integrity' && this.sealer) {
        this.tampered = new IntegrityError(`The other side found a control frame that failed its integrity check: ${String(m.message).slice(0, 200)}`);
        continue;
      }
      if (m.t === 'hb') {
        let hb: Msg<'hb'>;
        try {
          hb = validateMessage(m, ['hb']);
        } catch (err) {
          this.shutdown(err as ProtocolError);
          return;
        }
        this.emit('heartbeat', hb);
        continue;
      }
      this.emit('message', m);
    }
  }

  private shutdown(reason: Error | undefined, destroy = true): void {
    if (this.closed) return;
    this.closed = true;
    this.stopHeartbeat();
    if (reason instanceof IntegrityError && this.sealer && destroy) {
      // Our send direction is still sound: say why, so the other side waits for a reconnect instead of a drop.
      try {
        this.socket.end(this.sealer.seal(encodeFrame({ t: 'integrity', message: reason.message.slice(0, 4000) })));
        setTimeout(() => this.socket.destroy(), 2000).unref();
        destroy = false;
      } catch { /* the counter is spent: just close */ }
    }
    if (destroy) this.socket.destroy();
    this.emit('close', reason ?? this.tampered);
  }
}
