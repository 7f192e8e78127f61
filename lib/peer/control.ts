/**
 * A peer's control connection to the master: the handshake (the run-token proofs both ways), heartbeats, and
 * reconnecting with back-off after a loss, resuming the session. It hands every validated message of the master
 * to its owner and says when the session is over for good (dropped, refused, master gone past the deadline).
 * The socket, its framing and the heartbeats live in a worker thread (control-thread.ts), so a busy JavaScript
 * thread does not look dead to the master; the decisions stay here.
 */
import { AuthError, ClosedError, ProtocolError, TcclError, TimeoutError, errorFromCode } from '../errors';
import type { Logger } from '../log';
import {
  ClientKeyExchange, MASTER_MESSAGES, MasterMsg, PROTOCOL_NAME, PROTOCOL_VERSION, PeerMsg, PeerStats, ResumeReport, makeNonce, validateMessage,
} from '../protocol';
import { formatHostPort } from '../validate';
import { ControlThread, RemoteConnection } from './control-thread';
import { monotonicMs } from '../clock';

export interface ControlOptions {
  /** The masters to try, in order (one, or a restartable master's standbys). */
  masters: { host: string; port: number }[];
  token?: string;
  peerGroup: number;
  advertiseAddress?: string;
  label?: string;
  /** The data-plane port to register. */
  dataPort: number;
  /** After losing the master, how long to keep trying to reconnect, ms. */
  reconnectTimeoutMs: number;
  /** The counters sent with every heartbeat. */
  stats?: () => Partial<PeerStats>;
  /** What this peer holds, for a master that does not know its session (a restarted one): lib/protocol/resume.ts. */
  report?: () => ResumeReport;
  /** Let the master announce admission votes on this peer's commits (lib/peer/admission.ts). */
  autoAdmit?: boolean;
  /** This peer's identity public key, registered for the master to announce with the ring (identity.ts). */
  identity?: Uint8Array;
}

/** Refusals after which another master of the list may still take the peer (a standby, one shutting down). */
const TRY_ANOTHER_MASTER = new Set(['NOT_LEADER', 'CLOSED']);
/** Longest pause between two reconnect attempts, ms: short, so a restarted master is found within about this. */
const MAX_RECONNECT_DELAY_MS = 500;

/** What the owner of a control connection hears. */
export interface ControlHandlers {
  /** A message of the master (after the handshake); `dropped` and `error` end the session instead. */
  message(m: MasterMsg): void;
  /** The connection came back and the session resumed: say again what may have been lost, wake who waited. */
  resumed(): void;
  /** The session is over: nothing will arrive any more. */
  ended(err: Error): void;
}

interface Handshake {
  conn: RemoteConnection;
  nonce: Uint8Array;
  masterNonce?: Uint8Array;
  /** With a token: the key exchange under way, until the master's `kx` (lib/protocol/secure.ts). */
  kx?: ClientKeyExchange;
  registered?: boolean;
  resolve: () => void;
  reject: (e: Error) => void;
}

export class ControlClient {
  /** This peer's id at the master (e.g. `p3`); '' before the first welcome. */
  id = '';
  /** Heartbeat settings the master gave in its welcome. */
  heartbeat = { intervalMs: 500, timeoutMs: 3000 };
  /** True while the connection is lost and being re-established. */
  reconnecting = false;
  private conn?: RemoteConnection;
  private session?: { id: string; secret: Uint8Array };
  private handshake?: Handshake;
  private ended = false;
  /** Index in `options.masters` of the master dialled last. */
  private current = 0;

  private readonly thread: ControlThread;

  constructor(private readonly options: ControlOptions, private readonly handlers: ControlHandlers, private log: Logger) {
    this.thread = new ControlThread(options.stats);
  }

  /** `host:port` of the master, for messages. */
  get address(): string {
    const m = this.options.masters[this.current];
    return formatHostPort(m.host, m.port);
  }

  /** Messages of the master wait for this thread (it was busy): its view of the group may be stale. */
  behind(): boolean {
    return this.thread.behind();
  }

  /** Resolves once the messages of the master that waited for this thread were handled; `signal` withdraws the wait. */
  caughtUp(signal?: AbortSignal): Promise<void> {
    return this.thread.caughtUp(signal);
  }

  /** Sends a message to the master; quietly nothing while disconnected (what matters is said again on resume). */
  send(m: PeerMsg): void {
    if (!this.ended) this.conn?.send(m);
  }

  /** Opens the connection and registers; resolves after the master's welcome. */
  open(deadline: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const { host, port } = this.options.masters[this.current];
      const conn = this.thread.connect(host, port);
      let timer: NodeJS.Timeout | undefined;
      const settle = () => {
        if (timer) clearTimeout(timer);
        if (this.handshake?.conn === conn) this.handshake = undefined;
      };
      const nonce = makeNonce();
      this.handshake = {
        conn, nonce,
        resolve: () => { settle(); resolve(); },
        reject: (e) => { settle(); conn.close(); reject(e); },
      };
      if (deadline !== Infinity) {
        timer = setTimeout(() => this.handshake?.reject(new TimeoutError(`Timed out connecting to the master at ${this.address}`)), Math.max(0, deadline - monotonicMs()));
      }
      conn.on('message', (m) => this.onMessage(conn, m));
      conn.on('close', (reason) => this.onClose(conn, reason));
      conn.once('connect', () => {
        // With a token the session's secret waits for the sealed `register`; without one nothing is secret anyway.
        const secret = this.options.token === undefined ? this.session?.secret : undefined;
        conn.send({ t: 'hello', proto: PROTOCOL_NAME, version: PROTOCOL_VERSION, nonce, session: this.session?.id, secret });
      });
    });
  }

  /**
   * Registers with the first master of the list that takes this peer (a standby answers NOT_LEADER and the next
   * one is tried); rejects with the last master's error when none does.
   */
  async openAny(deadline: number): Promise<void> {
    for (let i = 0; ; i++) {
      try {
        return await this.open(deadline);
      } catch (err) {
        const code = (err as TcclError).code;
        const another = !(err instanceof AuthError || err instanceof ProtocolError) || TRY_ANOTHER_MASTER.has(code);
        if (!another || i + 1 >= this.options.masters.length || monotonicMs() >= deadline) throw err;
        this.log.info('master did not take this peer; trying the next one', { master: this.address, err: (err as Error).message });
        this.current = (this.current + 1) % this.options.masters.length;
      }
    }
  }

  /** Ends the session: says goodbye (so the master re-forms at once) or just closes; resolves once that is sent. */
  close(err: Error, sayBye: boolean): Promise<void> {
    if (!this.ended) {
      this.ended = true;
      this.handshake?.reject(err);
      const conn = this.conn;
      if (conn && !conn.isClosed) {
        if (sayBye) conn.sendAndClose({ t: 'bye' });
        else conn.close();
      }
    }
    return this.thread.shutdown();
  }

  private end(err: Error): void {
    if (this.ended) return;
    void this.close(err, false);
    this.handlers.ended(err);
  }

  private onHandshake(hs: Handshake, raw: Record<string, unknown>): void {
    if (!hs.masterNonce) {
      const m = validateMessage(raw, ['challenge', 'error']);
      if (m.t === 'error') return hs.reject(errorFromCode(m.code, `The master refused this peer: ${m.message}`));
      if (m.version !== PROTOCOL_VERSION) {
        return hs.reject(new ProtocolError(`The master speaks protocol version ${m.version}; this peer speaks ${PROTOCOL_VERSION}`));
      }
      const token = this.options.token;
      if (m.auth && token === undefined) return hs.reject(new AuthError('The master requires a run token: pass the "token" option or set TCCL_TOKEN'));
      if (!m.auth && token !== undefined) {
        return hs.reject(new AuthError('This peer has a run token but the master does not use one: refusing to join a master that cannot prove it knows the token'));
      }
      hs.masterNonce = m.nonce;
      if (token === undefined) return this.register(hs);
      hs.kx = new ClientKeyExchange(token, hs.nonce);
      hs.conn.send(hs.kx.offer(m.nonce));
      return;
    }
    if (!hs.registered) {
      const m = validateMessage(raw, ['kx', 'error']);
      if (m.t === 'error') return hs.reject(errorFromCode(m.code, `The master refused this peer: ${m.message}`));
      hs.conn.secure(hs.kx!.finish(m));
      return this.register(hs);
    }
    const m = validateMessage(raw, ['welcome', 'error']);
    if (m.t === 'error') return hs.reject(errorFromCode(m.code, `The master refused this peer: ${m.message}`));
    const old = this.conn;
    this.conn = hs.conn;
    if (old && old !== hs.conn) old.close();
    if (this.id === '') this.log = this.log.child(`peer ${m.peer}`);
    this.id = m.peer;
    this.session = { id: m.session, secret: m.secret };
    this.heartbeat = { intervalMs: m.heartbeatIntervalMs, timeoutMs: m.peerTimeoutMs };
    hs.conn.startHeartbeat(m.heartbeatIntervalMs, m.peerTimeoutMs);
    this.log.debug(m.resumed ? 'reconnected to the master' : 'registered with the master', { observedHost: m.observedHost, encryption: hs.kx ? 'aes-256-gcm' : 'off' });
    hs.resolve();
  }

  private register(hs: Handshake): void {
    hs.registered = true;
    hs.conn.send({
      t: 'register',
      peerGroup: this.options.peerGroup,
      dataPort: this.options.dataPort,
      advertiseAddress: this.options.advertiseAddress,
      label: this.options.label,
      // Only said when 'auto', so that a manual peer's register stays what older masters accept.
      admission: this.options.autoAdmit ? 'auto' : undefined,
      // A resuming peer says what it holds, for a master that does not know its session (a restarted one).
      resume: this.session && this.options.report ? this.options.report() : undefined,
      // Sealed by now (with a token): the session's secret and this peer's identity key cross only encrypted.
      secret: this.options.token !== undefined ? this.session?.secret : undefined,
      identity: this.options.identity,
    });
  }

  private onMessage(conn: RemoteConnection, raw: Record<string, unknown>): void {
    try {
      const hs = this.handshake;
      if (hs && hs.conn === conn) return this.onHandshake(hs, raw);
      if (conn !== this.conn || this.ended) return;
      const m = validateMessage(raw, MASTER_MESSAGES);
      if (m.t === 'dropped') {
        this.log.error('dropped by the master', { reason: m.reason });
        return this.end(new ClosedError(`This peer was dropped by the master: ${m.reason}. Create a new Communicator to rejoin`));
      }
      if (m.t === 'error') return this.end(errorFromCode(m.code, `The master ended the session: ${m.message}`));
      this.handlers.message(m);
    } catch (err) {
      this.log.error('protocol error from the master', { err });
      const hs = this.handshake;
      if (hs && hs.conn === conn) hs.reject(err as Error);
      else this.end(err as Error);
    }
  }

  private onClose(conn: RemoteConnection, reason: Error | undefined): void {
    const hs = this.handshake;
    if (hs && hs.conn === conn) {
      hs.reject(reason instanceof ProtocolError ? reason
        : new ClosedError(`The master at ${this.address} closed the connection during the handshake${reason ? `: ${reason.message}` : ''}`));
      return;
    }
    if (conn !== this.conn || this.ended) return;
    if (reason instanceof ProtocolError) this.end(reason);
    else void this.reconnect(reason);
  }

  private async reconnect(reason: Error | undefined): Promise<void> {
    const why = reason ? reason.message : 'connection closed';
    this.log.warn('lost the master; reconnecting', { master: this.address, reason: why, timeoutMs: this.options.reconnectTimeoutMs });
    this.reconnecting = true;
    const started = monotonicMs();
    const deadline = started + this.options.reconnectTimeoutMs;
    let delay = 50;
    let last: Error | undefined = reason;
    let refusal: Error | undefined;
    for (let attempt = 1; !this.ended && monotonicMs() < deadline; attempt++) {
      try {
        await this.open(Math.min(deadline, monotonicMs() + this.heartbeat.timeoutMs));
        this.reconnecting = false;
        this.log.warn('reconnected to the master', { master: this.address, attempts: attempt, ms: Math.round(monotonicMs() - started) });
        this.handlers.resumed();
        return;
      } catch (err) {
        last = err as Error;
        const code = (err as TcclError).code;
        const refused = err instanceof AuthError || err instanceof ProtocolError || /refused this peer/.test(last.message);
        if (refused && !TRY_ANOTHER_MASTER.has(code)) {
          refusal = last;
          break;
        }
        // Every attempt is logged (info); every tenth also as a warning, so a long outage stays visible.
        this.log[attempt % 10 === 0 ? 'warn' : 'info']('reconnect attempt failed', {
          master: this.address, attempt, ms: Math.round(monotonicMs() - started), err: last.message,
        });
      }
      // Next master of the list; the pause grows (with jitter) up to MAX_RECONNECT_DELAY_MS.
      this.current = (this.current + 1) % this.options.masters.length;
      const pause = Math.min(delay * (0.75 + Math.random() / 2), Math.max(0, deadline - monotonicMs()));
      await new Promise((r) => setTimeout(r, pause));
      delay = Math.min(delay * 2, MAX_RECONNECT_DELAY_MS);
    }
    if (this.ended) return;
    const err = refusal ?? (last instanceof ClosedError && last !== reason
      ? last
      : new ClosedError(
          `Lost the master at ${this.address} (${why}) and could not reconnect within ${this.options.reconnectTimeoutMs} ms${last && last !== reason ? `: ${last.message}` : ''}`,
        ));
    this.log.error('giving up on the master', { err });
    this.end(err);
  }
}
