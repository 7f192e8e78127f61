/**
 * The master: a small coordinator that never touches tensor data. This file is its socket server: it accepts
 * connections, runs the handshake (run-token challenge, sessions), keeps heartbeats, and feeds everything a
 * registered peer says to the {@link Coordinator} (coordinator.ts), the pure state machine that decides
 * membership, epochs, votes, commits, drops and shared-state syncs; it then carries out the coordinator's
 * effects (send, drop) and arms one timer for its next deadline. See docs/master.md and docs/architecture.md.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import * as net from 'node:net';
import { monotonicMs } from '../clock';
import { IntegrityError, ProtocolError } from '../errors';
import { Logger } from '../log';
import {
  Check, Connection, encodeFrame, Hello, PEER_MESSAGES, PROTOCOL_NAME, PROTOCOL_VERSION, Register, makeNonce,
  makeSessionId, sessionSecret, validateMessage,
} from '../protocol';
import { dialableHost, formatHostPort } from '../validate';
import { Checks } from './check';
import { HandshakeGate } from './gate';
import { awaitReconnect, keyExchange } from './handshake';
import { Coordinator, Effect } from './coordinator';
import { rememberBounded } from './context';
import type { Counters, FeedEvent } from './feed';
import type { GroupInfo } from './group';
import { HttpEndpoint, startHttp } from './http';
import { createMetrics } from './metrics';
import { checkUnknownSession } from './sessions';
import { INSECURE_WARNING, MasterOptions, resolveOptions } from './options';
import { MasterView, linkModes, viewOf } from './status';
import { Telemetry } from './telemetry';
import { solveInWorker } from '../topology/solver-worker';

export { STATE_TAG_BASE } from './sync';
export { INSECURE_WARNING, type MasterOptions } from './options';

/** A registered peer's connection and session. */
interface Session {
  peer: string;
  group: number;
  conn: Connection;
  session: string;
  secret: Buffer;
  /** What its last heartbeat said of its JavaScript thread (`hb.busy`, ms), for the coordinator. */
  busy?: number;
}

/** Longest sleep between two ticks of the coordinator, so that a clock jump is noticed. */
const MAX_TICK_MS = 1000;

/**
 * @example
 * ```ts
 * const master = new Master({ host: '0.0.0.0', port: 48148, token: process.env.TCCL_TOKEN });
 * await master.listen();
 * // ... peers connect with Communicator.connect({ master: 'host:48148', token })
 * await master.close();
 * ```
 */
export class Master {
  readonly host: string;
  private readonly requestedPort: number;
  private readonly token?: string;
  private readonly metricsToken?: string;
  /** Listening off loopback without a token, as asked (`insecure`): said at start, in /status and on the dashboard. */
  readonly insecure: boolean;
  readonly heartbeatIntervalMs: number;
  readonly peerTimeoutMs: number;
  readonly voteTimeoutMs: number;
  private readonly handshakeTimeoutMs: number;
  private readonly maxFrameBytes: number;
  private readonly log: Logger;
  private readonly core: Coordinator;
  private standby?: string; // why new peers are refused (a standby of an etcd election: election.ts)
  private server?: net.Server;
  /** Peer id -> its live session. */
  private readonly byPeer = new Map<string, Session>();
  /** Session id -> session (for reconnects). */
  private readonly bySession = new Map<string, Session>();
  private readonly connections = new Set<Connection>();
  private readonly droppedSessions = new Map<string, true>(); // a reconnect with one is refused, not resumed
  private runId?: string; // in every session id: this master's own, or the one its first resuming peer brought
  private timer?: NodeJS.Timeout;
  private closed = false;
  private boundPort = 0;
  private readonly telemetry: Telemetry;
  private readonly checks: Checks;
  private readonly gate: HandshakeGate;
  private readonly httpOptions?: { host: string; port: number };
  private http?: HttpEndpoint;
  private startedAt = Date.now();

  constructor(options: MasterOptions = {}) {
    const o = resolveOptions(options);
    ({ host: this.host, port: this.requestedPort, token: this.token, metricsToken: this.metricsToken, insecure: this.insecure } = o);
    ({ heartbeatIntervalMs: this.heartbeatIntervalMs, peerTimeoutMs: this.peerTimeoutMs, voteTimeoutMs: this.voteTimeoutMs } = o);
    ({ handshakeTimeoutMs: this.handshakeTimeoutMs, maxFrameBytes: this.maxFrameBytes, http: this.httpOptions } = o);
    this.log = new Logger('master', options.logLevel, 'info', undefined, options.logFormat);
    const lastSeen = (id: string) => this.telemetry?.peer(id)?.lastHeartbeat;
    this.core = new Coordinator({ voteTimeoutMs: this.voteTimeoutMs, ackTimeoutMs: this.peerTimeoutMs, resumeWindowMs: o.resumeWindowMs, jsHangTimeoutMs: o.jsHangTimeoutMs, lastSeen });
    this.core.feed.subscribe((e) => this.log[e.level](e.what, e.fields));
    this.gate = new HandshakeGate(o.maxUnauthenticated, this.log);
    this.telemetry = new Telemetry(this.core.feed);
    this.checks = new Checks({
      members: (group) => (this.core.groupsInfo().find((g) => g.peerGroup === group)?.members ?? []).map((id) => this.core.peer(id)!).filter(Boolean),
      send: (peer, msg) => this.byPeer.get(peer)?.conn.send(msg),
      log: this.log,
      auth: this.token !== undefined,
    });
  }

  /** Starts listening; resolves with the port. */
  async listen(): Promise<number> {
    if (this.closed) throw new Error('The master is closed');
    if (this.server) return this.boundPort;
    this.boundPort = ((this.server = await this.gate.listen(this.requestedPort, this.host, (s) => this.onSocket(s))).address() as net.AddressInfo).port;
    this.startedAt = Date.now();
    if (this.httpOptions) {
      try {
        const view = this.view();
        this.http = await startHttp({
          ...this.httpOptions, token: this.token, metricsToken: this.metricsToken, view, log: this.log,
          registry: createMetrics(view, (l) => this.core.feed.subscribe(l)),
        });
      } catch (err) {
        await this.close();
        throw new Error(`Cannot serve HTTP on ${formatHostPort(this.httpOptions.host, this.httpOptions.port)}: ${(err as Error).message}`, { cause: err });
      }
    }
    const modes = linkModes(this.token !== undefined);
    this.log.info('listening', { host: this.host, port: this.boundPort, auth: this.token ? 'token' : 'none', control: modes.control, data: modes.data, http: this.http ? this.dashboardUrl : undefined });
    if (this.insecure) this.log.warn(INSECURE_WARNING, { host: this.host });
    return this.boundPort;
  }

  /** The HTTP port serving /metrics, /status and the dashboard (undefined without `httpPort`). */
  get httpPort(): number | undefined {
    return this.http?.port;
  }

  /** The dashboard's address, e.g. `http://127.0.0.1:9464/` (undefined without `httpPort`). */
  get dashboardUrl(): string | undefined {
    return this.http && this.httpOptions ? `http://${formatHostPort(dialableHost(this.httpOptions.host), this.http.port)}/` : undefined;
  }

  private view(): MasterView {
    const self = this; // getters: every read sees the live state
    return viewOf({ get address() { return self.address; }, get startedAt() { return self.startedAt; }, get counters() { return self.counters; } },
      this.token !== undefined, this.telemetry, this.core, this.insecure ? [INSECURE_WARNING] : []);
  }

  /** Serves peers, or (`false`) refuses them with NOT_LEADER and closes every session (election.ts). */
  setServing(serving: boolean, why = 'a standby'): void {
    if ((this.standby = serving ? undefined : why)) for (const c of this.connections) c.socket.destroy();
  }

  /** The port listened on (0 before listen()). */
  get port(): number {
    return this.boundPort;
  }

  /** `host:port` for peers to dial. */
  get address(): string {
    return formatHostPort(dialableHost(this.host), this.boundPort);
  }

  /** A snapshot of the groups, for tests, tools and logs. */
  groupsInfo(): GroupInfo[] {
    return this.core.groupsInfo();
  }

  /** Recent control-plane events (joins, votes, re-forms, drops, commits, syncs), oldest first. */
  events(afterSeq = 0): FeedEvent[] {
    return this.core.feed.recent(afterSeq);
  }

  /** Counts since the master started. */
  get counters(): Readonly<Counters> {
    return this.core.feed.counters;
  }

  /** Disconnects every peer: their calls fail with ClosedError, or with `{ endRun: false }` (a restart) they resume later. */
  async close(options: { endRun?: boolean } = {}): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    for (const c of this.connections) {
      if (options.endRun !== false) c.sendAndClose({ t: 'error', code: 'CLOSED', message: 'the master shut down' });
      c.socket.destroySoon();
    }
    this.connections.clear();
    const server = this.server;
    await this.http?.close();
    if (server?.listening) await new Promise<void>((resolve) => server.close(() => resolve()));
    this.log.info('closed');
  }

  // ---- driving the coordinator ----

  /** Feeds the coordinator, carries out its effects; never throws (sockets, timers, workers call it): a failure costs its peer. */
  private apply(event: Parameters<Coordinator['apply']>[0]): void {
    if (this.closed) return;
    let effects: Effect[];
    try {
      effects = this.core.apply(event);
    } catch (err) {
      this.log.error('the coordinator failed on an event', { event: event.type, peer: 'peer' in event ? event.peer : undefined, err });
      if ((event.type === 'message' || event.type === 'resume') && this.byPeer.has(event.peer)) {
        this.apply({ type: 'lost', peer: event.peer, reason: `internal error on its message: ${(err as Error).message}` });
      }
      this.arm();
      return;
    }
    this.run(effects);
  }

  private run(effects: Effect[]): void {
    // One message to many members (a ring result, a plan) is encoded once.
    const frames = new Map<object, Buffer>();
    for (const e of effects) {
      if (e.type === 'solve') {
        this.solve(e);
        continue;
      }
      const s = this.byPeer.get(e.type === 'send' ? e.to : e.peer);
      if (!s) continue;
      if (e.type === 'send') {
        try {
          const frame = frames.get(e.msg) ?? frames.set(e.msg, encodeFrame(e.msg, this.maxFrameBytes)).get(e.msg)!;
          s.conn.send(e.msg, frame);
        } catch (err) { // too large for a frame: a bug (what grows with the group is sized for thousands), not a crash
          this.log.error('cannot encode a message for a peer; closing its connection', { peer: s.peer, msg: e.msg.t, err });
          s.conn.close(err as Error);
        }
        continue;
      }
      this.byPeer.delete(s.peer);
      this.bySession.delete(s.session);
      rememberBounded(this.droppedSessions, s.session, true, 65536);
      this.telemetry.forget(s.peer);
      if (!s.conn.isClosed) s.conn.sendAndClose({ t: 'dropped', reason: e.reason });
    }
    this.arm();
  }

  /** Solves a ring order in a worker thread (never on this loop) and feeds the answer back. */
  private solve(job: Extract<Effect, { type: 'solve' }>): void {
    solveInWorker(job.matrix, job.options, this.voteTimeoutMs).then(
      (solution) => this.apply({ type: 'solved', group: job.group, round: job.round, solution }),
      (err: Error) => this.apply({ type: 'solved', group: job.group, round: job.round, error: String(err?.message ?? err) }),
    ).catch((err: Error) => this.log.error('solver answer failed', { group: job.group, err }));
  }

  /** One timer for the coordinator's next deadline. */
  private arm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const next = this.core.nextDeadline();
    if (next === undefined || this.closed) return;
    this.timer = setTimeout(() => this.apply({ type: 'tick' }), Math.min(MAX_TICK_MS, Math.max(0, next - monotonicMs())));
    this.timer.unref();
  }

  // ---- connections and handshake ----

  private onSocket(socket: net.Socket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    const conn = new Connection(socket, this.maxFrameBytes);
    this.connections.add(conn);
    this.gate.enter(conn);
    const from = `${conn.remoteAddress}:${conn.remotePort}`;
    let stage: 'hello' | 'kx' | 'register' | 'peer' | 'check' = 'hello';
    let hello: Hello | undefined;
    let nonce: Buffer | undefined;
    let session: Session | undefined;
    const handshakeTimer = setTimeout(() => {
      this.gate.logRefusal('handshake timed out; closing connection', { from, timeoutMs: this.handshakeTimeoutMs });
      conn.socket.resetAndDestroy();
      conn.close(new Error('handshake timeout'));
    }, this.handshakeTimeoutMs);
    handshakeTimer.unref();
    const reject = (code: string, message: string, log: string, fields: Record<string, unknown> = {}) => {
      clearTimeout(handshakeTimer);
      this.gate.refuse(conn, { t: 'error', code, message }, log, { from, ...fields });
    };

    conn.on('close', (reason) => {
      clearTimeout(handshakeTimer);
      this.gate.leave(conn);
      this.connections.delete(conn);
      if (session && this.byPeer.get(session.peer)?.conn === conn) {
        const s = session;
        if (reason instanceof IntegrityError) return awaitReconnect(this.log, s.peer, reason, this.peerTimeoutMs, () => this.byPeer.get(s.peer)?.conn === conn, (why) => this.apply({ type: 'lost', peer: s.peer, reason: why }));
        const why = reason instanceof ProtocolError
          ? `protocol error: ${reason.message}`
          : reason ? `control connection lost: ${reason.message}` : 'control connection closed';
        this.apply({ type: 'lost', peer: session.peer, reason: why });
      } else if (reason instanceof ProtocolError) {
        this.gate.logRefusal('rejected connection: protocol error', { from, err: reason });
      } else if (stage !== 'peer') {
        this.log.debug('connection closed during handshake', { from, reason });
      }
    });

    conn.on('message', (raw) => {
      try {
        if (stage === 'hello') {
          const m = validateMessage(raw, ['hello']);
          if (m.proto !== PROTOCOL_NAME) throw new ProtocolError(`Unknown protocol ${JSON.stringify(m.proto)}; expected "${PROTOCOL_NAME}"`);
          if (m.version !== PROTOCOL_VERSION) {
            reject('PROTOCOL', `protocol version ${m.version} is not supported: this master speaks version ${PROTOCOL_VERSION}`,
              'rejected peer: protocol version mismatch', { version: m.version, expected: PROTOCOL_VERSION });
            return;
          }
          hello = m;
          this.gate.hello(conn);
          nonce = makeNonce();
          stage = this.token !== undefined ? 'kx' : 'register';
          conn.send({ t: 'challenge', version: PROTOCOL_VERSION, nonce, auth: this.token !== undefined });
        } else if (stage === 'kx') {
          const why = keyExchange(conn, this.token!, hello!.nonce, nonce!, raw);
          if (why) return reject('AUTH', `authentication failed: ${why} (the master requires the run token)`, 'rejected peer: authentication failed', { why });
          stage = 'register';
        } else if (stage === 'register') {
          const m = validateMessage(raw, ['register', 'check']);
          if (this.standby) return reject('NOT_LEADER', `this master is ${this.standby}`, 'refused a peer: this master is a standby');
          clearTimeout(handshakeTimer);
          this.gate.leave(conn, this.maxFrameBytes);
          if (m.t === 'check') return void (stage = 'check', this.checks.start(conn, m as Check));
          stage = 'peer';
          session = hello!.session !== undefined ? this.resume(conn, hello!, m) : this.admit(conn, m);
        } else if (session && this.byPeer.get(session.peer)?.conn === conn) {
          const msg = validateMessage(raw, PEER_MESSAGES);
          if (msg.t === 'probeDone') this.checks.onProbeDone(session.peer, msg);
          else this.apply({ type: 'message', peer: session.peer, msg });
        }
      } catch (err) {
        const e = err instanceof ProtocolError ? err : new ProtocolError(String((err as Error)?.message ?? err));
        if (session && this.byPeer.has(session.peer)) {
          this.log.warn('protocol error from peer; dropping it', { from, peer: session.peer, err: e });
          this.apply({ type: 'lost', peer: session.peer, reason: `protocol error: ${e.message}` });
        } else {
          reject('PROTOCOL', e.message, 'rejected connection: protocol error', { err: e });
        }
      }
    });
  }

  private welcome(conn: Connection, s: Session, resumed: boolean): void {
    conn.send({
      t: 'welcome',
      peer: s.peer,
      session: s.session,
      secret: s.secret,
      observedHost: conn.remoteAddress,
      heartbeatIntervalMs: this.heartbeatIntervalMs,
      peerTimeoutMs: this.peerTimeoutMs,
      resumed,
    });
    conn.startHeartbeat(this.heartbeatIntervalMs, this.peerTimeoutMs, (reason) => {
      if (this.byPeer.get(s.peer)?.conn === conn) this.apply({ type: 'lost', peer: s.peer, reason: reason.message });
      else conn.close(reason);
    });
    this.telemetry.heartbeat(s.peer);
    conn.on('heartbeat', (hb) => {
      if (this.byPeer.get(s.peer)?.conn !== conn) return;
      this.telemetry.heartbeat(s.peer, hb.stats);
      if (hb.busy !== undefined || s.busy !== undefined) this.apply({ type: 'busy', peer: s.peer, ms: (s.busy = hb.busy) ?? 0 });
    });
  }

  private register(s: Session, resumed: boolean): Session {
    this.byPeer.set(s.peer, s);
    this.bySession.set(s.session, s);
    this.welcome(s.conn, s, resumed);
    return s;
  }

  private admit(conn: Connection, m: Register): Session {
    const peer = this.core.newPeerId();
    const session = makeSessionId(peer, m.peerGroup, (this.runId ??= randomBytes(8).toString('hex')), randomBytes(8).toString('hex'));
    const s = this.register({ peer, group: m.peerGroup, conn, session, secret: sessionSecret(this.token, session) }, false);
    this.log.debug('peer registered', { peer: s.peer, label: m.label, control: `${conn.remoteAddress}:${conn.remotePort}`, encryption: conn.sealed ? 'aes-256-gcm' : 'off' });
    this.apply({ type: 'join', peer: s.peer, group: m.peerGroup, host: m.advertiseAddress || conn.remoteAddress, port: m.dataPort, label: m.label, autoAdmit: m.admission === 'auto', identity: m.identity });
    return s;
  }

  /** A reconnect: a session this master holds, or one it never issued (a peer resuming after a restart: sessions.ts). */
  private resume(conn: Connection, hello: Hello, m: Register): Session | undefined {
    const known = this.bySession.get(hello.session!);
    const secret = m.secret ?? hello.secret;
    if (known && this.core.peer(known.peer) && secret?.length === known.secret.length && timingSafeEqual(known.secret, Buffer.from(secret)) && known.group === m.peerGroup) {
      const old = known.conn;
      known.conn = conn;
      old.close(new Error('replaced by a reconnect'));
      this.welcome(conn, known, true);
      this.apply({ type: 'resume', peer: known.peer });
      return known;
    }
    const r = known || this.droppedSessions.has(hello.session!) ? { code: 'DROPPED', message: 'this peer is no longer part of the run (it was dropped)' }
      : checkUnknownSession(this.token, this.runId, hello, m, conn.remoteAddress, (x) => this.core.checkRejoin(x));
    if ('code' in r) {
      this.log.warn('refused a reconnect', { from: `${conn.remoteAddress}:${conn.remotePort}`, code: r.code, why: r.message });
      return void conn.sendAndClose({ t: 'error', code: r.code, message: r.message });
    }
    this.runId ??= r.run;
    const s = this.register({ peer: r.report.peer, group: r.report.group, conn, session: hello.session!, secret: Buffer.from(secret!) }, true);
    this.apply({ type: 'rejoin', ...r.report });
    return s;
  }
}
