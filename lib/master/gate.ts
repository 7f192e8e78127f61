/**
 * The master's door for connections that have not authenticated: a cap on how many there are, eviction of the
 * oldest when it is full (so that a flood of strangers cannot lock a peer out: a peer says hello at once and
 * answers the challenge within a round trip, a half-open connection never does), small frames until the
 * handshake is done, and a listener error (EMFILE, ENFILE under a flood) that is logged at a bounded rate instead
 * of once per refused connection. What a connection may buffer before it authenticates is bounded by the cap
 * times the frame limit of its stage ({@link HELLO_MAX_FRAME_BYTES}, {@link REGISTER_MAX_FRAME_BYTES}; at most a
 * quarter of the cap may be past hello): about 68 MiB at the default cap of 1024.
 *
 * Why the cap is at least twice the listen backlog ({@link BACKLOG}): the event loop accepts every pending
 * connection in one go before it reads any of them, so a peer accepted amid a burst must not be evicted by the
 * rest of the same burst before its hello is read. Once it said hello, only connections past hello compete with it.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import type { Logger } from '../log';
import type { Connection } from '../protocol';
import { monotonicMs } from '../clock';

/** Largest first frame (`hello`: about 100 bytes). */
export const HELLO_MAX_FRAME_BYTES = 4 << 10;
/** Largest `register` or `check` (a resume report names its ring: thousands of members fit). */
export const REGISTER_MAX_FRAME_BYTES = 256 << 10;
/** The listen backlog asked for (the kernel may lower it: net.core.somaxconn). */
export const BACKLOG = 511;
/** At most one log line about listener errors per this many ms (with the count since the last one). */
const ERROR_LOG_MS = 5000;

export class HandshakeGate {
  /** Connections that have not said hello, oldest first. */
  private readonly fresh = new Set<Connection>();
  /** Connections that said hello and have not authenticated, oldest first. */
  private readonly greeted = new Set<Connection>();
  /**
   * Connections refused before they authenticated, until their socket closes: the refusal is sent and the socket
   * ended gracefully (so an honest peer reads why), but a stranger that never reads keeps its descriptor until
   * Connection's linger ends; counted here, they are the first evicted (with an RST) when the cap is full.
   */
  private readonly refused = new Set<Connection>();
  /** Refusal log lines, per message: the count since the last line written (at most one per ERROR_LOG_MS). */
  private readonly refusals = new Map<string, { count: number; last: number }>();
  private evicted = 0;
  private errors = 0;
  private lastErrorLog = -Infinity;

  private readonly max: number;

  /** `max`: the cap asked for; it is lowered to half the process's descriptor limit where that is known (Linux). */
  constructor(max: number, private readonly log: Logger, nofile = descriptorLimit()) {
    this.max = nofile === undefined ? max : Math.max(1, Math.min(max, Math.floor(nofile / 2)));
    if (this.max < max) log.info('unauthenticated connections capped at half the descriptor limit', { cap: this.max, asked: max, nofile });
  }

  /** How many connections have not authenticated. */
  get size(): number {
    return this.fresh.size + this.greeted.size + this.refused.size;
  }

  /** Connections closed to make room since the master started. */
  get evictions(): number {
    return this.evicted;
  }

  /** A new connection: makes room if the cap is reached (closing the oldest that has not said hello, else the oldest). */
  enter(conn: Connection): void {
    conn.limitFrames(HELLO_MAX_FRAME_BYTES);
    while (this.size >= this.max) if (!this.evictOldest(this.refused.size > 0 ? this.refused : this.fresh.size > 0 ? this.fresh : this.greeted)) break;
    this.fresh.add(conn);
  }

  /** The connection said hello: it may send a larger `register` now. */
  hello(conn: Connection): void {
    if (!this.fresh.delete(conn)) return;
    while (this.greeted.size >= Math.max(1, this.max >> 2)) if (!this.evictOldest(this.greeted)) break;
    this.greeted.add(conn);
    conn.limitFrames(REGISTER_MAX_FRAME_BYTES);
  }

  /**
   * Refuses a connection that has not authenticated: sends `message` and closes, keeping the connection counted
   * until its socket is gone. `log` and `fields`: the refusal's log line (rate-limited, see {@link logRefusal}).
   */
  refuse(conn: Connection, message: Parameters<Connection['sendAndClose']>[0], log: string, fields: Record<string, unknown>): void {
    this.logRefusal(log, fields);
    this.leave(conn);
    if (conn.socket.destroyed) return conn.close();
    this.refused.add(conn);
    conn.socket.once('close', () => this.refused.delete(conn));
    conn.sendAndClose(message);
  }

  /**
   * A refused stranger's log line (a bad hello or frame, a failed proof, a handshake timeout): the first is written,
   * then at most one per ERROR_LOG_MS with the count since, so a flood of refusals cannot flood the log.
   */
  logRefusal(msg: string, fields: Record<string, unknown>): void {
    const now = monotonicMs();
    const r = this.refusals.get(msg) ?? { count: 0, last: -Infinity };
    r.count++;
    this.refusals.set(msg, r);
    if (now - r.last < ERROR_LOG_MS) return;
    this.log.warn(msg, r.count > 1 ? { ...fields, count: r.count } : fields);
    r.count = 0;
    r.last = now;
  }

  private evictOldest(from: Set<Connection>): boolean {
    const victim = from.values().next().value;
    if (!victim) return false;
    this.leave(victim);
    this.refused.delete(victim);
    this.evicted++;
    if (this.evicted === 1 || this.evicted % 1000 === 0) {
      this.log.warn('too many unauthenticated connections: closing the oldest', { max: this.max, evicted: this.evicted });
    }
    victim.socket.resetAndDestroy(); // an RST: no TIME_WAIT left behind for a stranger's connection
    return true;
  }

  /** The connection authenticated (its frame limit goes back to the master's) or closed. */
  leave(conn: Connection, maxFrameBytes?: number): void {
    this.fresh.delete(conn);
    this.greeted.delete(conn);
    if (maxFrameBytes !== undefined) conn.limitFrames(maxFrameBytes);
  }

  /** Listens; resolves once bound (rejects on e.g. EADDRINUSE); later listener errors go to {@link listenerError}. */
  async listen(port: number, host: string, onSocket: (socket: net.Socket) => void): Promise<net.Server> {
    const server = net.createServer(onSocket);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ port, host, backlog: BACKLOG }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.listenerError(err));
    return server;
  }

  /** A listener error (EMFILE and ENFILE under a flood): logged at most once per ERROR_LOG_MS, with a count. */
  listenerError(err: Error): void {
    this.errors++;
    const now = monotonicMs();
    if (now - this.lastErrorLog < ERROR_LOG_MS) return;
    this.lastErrorLog = now;
    this.log.error('listener error (connections refused meanwhile)', { err, count: this.errors });
    this.errors = 0;
  }
}

/** The soft RLIMIT_NOFILE of this process where /proc says it (Linux), else undefined. */
export function descriptorLimit(): number | undefined {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}
