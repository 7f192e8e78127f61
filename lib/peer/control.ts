/**
 * A peer's control connection to the master: the handshake (the run-token proofs both ways), heartbeats, and
 * reconnecting with back-off after a loss, resuming the session. It hands every validated message of the master
 * to its owner and says when the session is over for good (dropped, refused, master gone past the deadline).
 */
import * as net from 'node:net';
import { AuthError, ClosedError, ProtocolError, TimeoutError, errorFromCode } from '../errors';
import type { Logger } from '../log';
import {
  Connection, MASTER_MESSAGES, MasterMsg, PROTOCOL_NAME, PROTOCOL_VERSION, PeerMsg, PeerStats, makeNonce, masterProof, peerProof, proofMatches,
  validateMessage,
} from '../protocol';
import { formatHostPort } from '../validate';

export interface ControlOptions {
  host: string;
  port: number;
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
}

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
  conn: Connection;
  nonce: Uint8Array;
  masterNonce?: Uint8Array;
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
  private conn?: Connection;
  private session?: { id: string; secret: Uint8Array };
  private handshake?: Handshake;
  private ended = false;

  constructor(private readonly options: ControlOptions, private readonly handlers: ControlHandlers, private log: Logger) {}

  /** `host:port` of the master, for messages. */
  get address(): string {
    return formatHostPort(this.options.host, this.options.port);
  }

  /** Sends a message to the master; quietly nothing while disconnected (what matters is said again on resume). */
  send(m: PeerMsg): void {
    if (!this.ended) this.conn?.send(m);
  }

  /** Opens the connection and registers; resolves after the master's welcome. */
  open(deadline: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const socket = net.connect({ host: this.options.host, port: this.options.port });
      const conn = new Connection(socket);
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
        timer = setTimeout(() => this.handshake?.reject(new TimeoutError(`Timed out connecting to the master at ${this.address}`)), Math.max(0, deadline - Date.now()));
      }
      conn.on('message', (m) => this.onMessage(conn, m));
      conn.on('close', (reason) => this.onClose(conn, reason));
      socket.once('connect', () => {
        conn.send({ t: 'hello', proto: PROTOCOL_NAME, version: PROTOCOL_VERSION, nonce, session: this.session?.id, secret: this.session?.secret });
      });
    });
  }

  /** Ends the session: says goodbye (so the master re-forms at once) or just closes. */
  close(err: Error, sayBye: boolean): void {
    if (this.ended) return;
    this.ended = true;
    this.handshake?.reject(err);
    const conn = this.conn;
    if (conn && !conn.isClosed) {
      if (sayBye) conn.sendAndClose({ t: 'bye' });
      else conn.close();
    }
  }

  private end(err: Error): void {
    if (this.ended) return;
    this.close(err, false);
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
      hs.conn.send({
        t: 'register',
        proof: token !== undefined ? peerProof(token, m.nonce, hs.nonce) : undefined,
        peerGroup: this.options.peerGroup,
        dataPort: this.options.dataPort,
        advertiseAddress: this.options.advertiseAddress,
        label: this.options.label,
      });
      return;
    }
    const m = validateMessage(raw, ['welcome', 'error']);
    if (m.t === 'error') return hs.reject(errorFromCode(m.code, `The master refused this peer: ${m.message}`));
    if (this.options.token !== undefined && !proofMatches(masterProof(this.options.token, hs.nonce, hs.masterNonce), m.proof)) {
      return hs.reject(new AuthError('The master failed to prove it knows the run token'));
    }
    const old = this.conn;
    this.conn = hs.conn;
    if (old && old !== hs.conn) old.close();
    if (this.id === '') this.log = this.log.child(`peer ${m.peer}`);
    this.id = m.peer;
    this.session = { id: m.session, secret: m.secret };
    this.heartbeat = { intervalMs: m.heartbeatIntervalMs, timeoutMs: m.peerTimeoutMs };
    hs.conn.startHeartbeat(m.heartbeatIntervalMs, m.peerTimeoutMs, undefined, this.options.stats);
    this.log.debug(m.resumed ? 'reconnected to the master' : 'registered with the master', { observedHost: m.observedHost });
    hs.resolve();
  }

  private onMessage(conn: Connection, raw: Record<string, unknown>): void {
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

  private onClose(conn: Connection, reason: Error | undefined): void {
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
    this.log.warn('lost the master; reconnecting', { master: this.address, reason: why });
    this.reconnecting = true;
    const deadline = Date.now() + this.options.reconnectTimeoutMs;
    let delay = 100;
    let last: Error | undefined = reason;
    while (!this.ended && Date.now() < deadline) {
      try {
        await this.open(Math.min(deadline, Date.now() + this.heartbeat.timeoutMs));
        this.reconnecting = false;
        this.handlers.resumed();
        return;
      } catch (err) {
        last = err as Error;
        if (err instanceof AuthError || err instanceof ProtocolError || (err instanceof ClosedError && /refused this peer/.test(err.message))) break;
      }
      await new Promise((r) => setTimeout(r, Math.min(delay, Math.max(0, deadline - Date.now()))));
      delay = Math.min(delay * 2, 2000);
    }
    if (this.ended) return;
    const err = last instanceof ClosedError || last instanceof AuthError
      ? last
      : new ClosedError(
          `Lost the master at ${this.address} (${why}) and could not reconnect within ${this.options.reconnectTimeoutMs} ms${last && last !== reason ? `: ${last.message}` : ''}`,
        );
    this.log.error('giving up on the master', { err });
    this.end(err);
  }
}
