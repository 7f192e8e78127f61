/**
 * The master: a small coordinator that never touches tensor data. It admits peers (after the run-token
 * challenge), keeps one ring per peer group, runs the votes that accept pending peers, drops peers that die or
 * hang and re-forms their group at once, and confirms every collective operation to the whole group (an
 * operation counts as done only when every member finished it; one failure aborts it everywhere).
 * See docs/master.md.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import * as net from 'node:net';
import { ProtocolError } from '../errors';
import { Logger, LogLevel } from '../log';
import {
  Ack, Connection, DEFAULT_MAX_FRAME_BYTES, Done, Fail, Hello, Lost, PROTOCOL_NAME, PROTOCOL_VERSION, Register, StateDoneMsg,
  StateReportMsg, Vote, makeNonce, masterProof, peerProof, proofMatches, validateMessage,
} from '../protocol';
import { PeerStateReport, SyncDecision, electSharedState, validateStateReport } from '../shared-state/election';
import type { DType } from '../dtype';

export interface MasterOptions {
  /** Address to listen on (default '127.0.0.1'; use '0.0.0.0' to accept remote peers). */
  host?: string;
  /** Port (default 0: chosen by the OS; read it from `listen()` or `port`). */
  port?: number;
  /** Run token: peers must prove they know it. Default: no authentication. */
  token?: string;
  /** Heartbeat period both ways, ms (default 500). */
  heartbeatIntervalMs?: number;
  /** A peer silent for this long is dropped, ms (default 3000). Peers use the same value for the master. */
  peerTimeoutMs?: number;
  /** How long a vote (updateTopology) waits for every member, ms (default 60000). */
  voteTimeoutMs?: number;
  /** How long a new connection may take to authenticate, ms (default 5000). */
  handshakeTimeoutMs?: number;
  /** Largest control frame accepted, bytes (default 1 MiB). */
  maxFrameBytes?: number;
  /** Log level (default TCCL_LOG_LEVEL or 'info'). */
  logLevel?: LogLevel;
}

interface PeerRecord {
  id: string;
  label?: string;
  group: GroupState;
  conn: Connection;
  host: string;
  port: number;
  session: string;
  secret: Buffer;
  member: boolean;
  dropped: boolean;
  ackedEpoch: number;
}

interface GroupState {
  id: number;
  epoch: number;
  members: PeerRecord[];
  pending: PeerRecord[];
  ticket: Buffer;
  /** The epoch being installed: members that have not acknowledged it yet. */
  reforming?: { epoch: number; waiting: Set<string>; timer: NodeJS.Timeout };
  /** Member id -> request ids of its updateTopology calls in the open vote. */
  votes: Map<string, number[]>;
  voteTimer?: NodeJS.Timeout;
  /** Vote replies to send once the epoch being installed is ready. */
  voteReplies: { peer: PeerRecord; ids: number[]; accepted: number }[];
  /** Operation key -> members that finished it, in the current epoch. */
  ops: Map<string, Set<string>>;
  committed: Set<string>;
  aborted: Map<string, { code: string; message: string }>;
  /** The shared-state sync in progress, if any. */
  sync?: SyncRound;
  /** Reports for the next sync from peers that already finished the current one (they failed it). */
  nextReports: Map<string, PeerStateReport>;
  syncSeq: number;
  /** Tag ranges handed out to sync attempts so far. */
  stateTags: number;
  /**
   * The group's last successful sync per state layout (its sorted keys): the revision rule of the next election
   * of that state. Keyed by layout so that one group can sync several distinct states (e.g. two optimizers).
   */
  lastSyncs: Map<string, { revision: number; peers: string[] }>;
}

/**
 * One shared-state sync of a group: collect a report from every member (a vote with a deadline), elect,
 * broadcast the decision, wait until every member is done. A member lost while the decision is executed
 * starts a new attempt: the survivors re-report (their states are exactly what they hold now) and the master
 * elects again.
 */
interface SyncRound {
  id: number;
  attempt: number;
  phase: 'collect' | 'execute' | 'retry';
  reports: Map<string, PeerStateReport>;
  /** Peers that finished this sync with an error (they take no further part), and why. */
  failed: Map<string, string>;
  /** Peers that completed the current attempt's decision. */
  done: Set<string>;
  decision?: SyncDecision;
  /** The epoch the decision is executed in. */
  epoch: number;
  timer?: NodeJS.Timeout;
}

/**
 * Shared-state syncs use exchange tags from here on, a fresh range of STATE_TAG_SPAN per attempt, far above any
 * tag a user picks for an all-reduce.
 */
export const STATE_TAG_BASE = 2 ** 52;
const STATE_TAG_SPAN = 8;

const MAX_REMEMBERED_OPS = 4096;
/** State layouts whose last sync a group remembers (for the revision rule). */
const MAX_REMEMBERED_STATES = 64;

/** A state's layout identity: its sorted keys. */
function layoutOf(entries: Record<string, unknown>): string {
  return JSON.stringify(Object.keys(entries).sort());
}

function checkInt(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new TypeError(`Expected the "${name}" option to be an integer from ${min} to ${max}, got ${String(v)}`);
  }
  return v;
}

function remember<K>(set: Set<K> | Map<K, unknown>, key: K, value?: unknown): void {
  if (set instanceof Set) set.add(key);
  else set.set(key, value);
  if (set.size > MAX_REMEMBERED_OPS) set.delete(set.keys().next().value as K);
}

/** NativePeer id of a member: the master's id plus its data-plane address, readable in error messages. */
export function nativePeerId(p: { id: string; host: string; port: number }): string {
  return `${p.id}@${p.host.includes(':') ? `[${p.host}]` : p.host}:${p.port}`;
}

export class Master {
  readonly host: string;
  private readonly requestedPort: number;
  private readonly token?: string;
  readonly heartbeatIntervalMs: number;
  readonly peerTimeoutMs: number;
  readonly voteTimeoutMs: number;
  private readonly handshakeTimeoutMs: number;
  private readonly maxFrameBytes: number;
  private readonly log: Logger;
  private server?: net.Server;
  private readonly groups = new Map<number, GroupState>();
  private readonly sessions = new Map<string, PeerRecord>();
  private readonly connections = new Set<Connection>();
  private nextPeer = 1;
  private closed = false;
  private boundPort = 0;

  constructor(options: MasterOptions = {}) {
    this.host = options.host ?? '127.0.0.1';
    if (typeof this.host !== 'string' || !this.host) throw new TypeError('Expected the "host" option to be a non-empty string');
    this.requestedPort = checkInt('port', options.port ?? 0, 0, 65535);
    if (options.token !== undefined && (typeof options.token !== 'string' || options.token.length === 0)) {
      throw new TypeError('Expected the "token" option to be a non-empty string');
    }
    this.token = options.token;
    this.heartbeatIntervalMs = checkInt('heartbeatIntervalMs', options.heartbeatIntervalMs ?? 500, 10, 3_600_000);
    this.peerTimeoutMs = checkInt('peerTimeoutMs', options.peerTimeoutMs ?? 3000, 50, 3_600_000);
    if (this.peerTimeoutMs < 2 * this.heartbeatIntervalMs) {
      throw new TypeError(`Expected "peerTimeoutMs" (${this.peerTimeoutMs}) to be at least twice "heartbeatIntervalMs" (${this.heartbeatIntervalMs})`);
    }
    this.voteTimeoutMs = checkInt('voteTimeoutMs', options.voteTimeoutMs ?? 60_000, 1, 2 ** 31 - 1);
    this.handshakeTimeoutMs = checkInt('handshakeTimeoutMs', options.handshakeTimeoutMs ?? 5000, 1, 600_000);
    this.maxFrameBytes = checkInt('maxFrameBytes', options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES, 1024, 1 << 30);
    this.log = new Logger('master', options.logLevel, 'info');
  }

  /** Starts listening; resolves with the port. */
  async listen(): Promise<number> {
    if (this.closed) throw new Error('The master is closed');
    if (this.server) return this.boundPort;
    const server = net.createServer((socket) => this.onSocket(socket));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.requestedPort, this.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.log.error('listener error', { err }));
    this.boundPort = (server.address() as net.AddressInfo).port;
    this.log.info('listening', { host: this.host, port: this.boundPort, auth: this.token ? 'token' : 'none' });
    return this.boundPort;
  }

  /** The port listened on (0 before listen()). */
  get port(): number {
    return this.boundPort;
  }

  /** `host:port` for peers to dial. */
  get address(): string {
    const h = this.host === '0.0.0.0' || this.host === '::' ? '127.0.0.1' : this.host;
    return `${h.includes(':') ? `[${h}]` : h}:${this.boundPort}`;
  }

  /** A snapshot of the groups, for tests, tools and logs. */
  groupsInfo(): { peerGroup: number; epoch: number; members: string[]; pending: string[] }[] {
    return [...this.groups.values()].map((g) => ({
      peerGroup: g.id,
      epoch: g.epoch,
      members: g.members.map((m) => m.id),
      pending: g.pending.map((m) => m.id),
    }));
  }

  /** Stops listening and disconnects every peer (their pending and later calls fail with ClosedError). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const g of this.groups.values()) {
      if (g.reforming) clearTimeout(g.reforming.timer);
      if (g.voteTimer) clearTimeout(g.voteTimer);
      if (g.sync?.timer) clearTimeout(g.sync.timer);
    }
    for (const c of this.connections) {
      c.sendAndClose({ t: 'error', code: 'CLOSED', message: 'the master shut down' });
      c.socket.destroySoon();
    }
    this.connections.clear();
    const server = this.server;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    this.log.info('closed');
  }

  // ---- connections and handshake ----

  private onSocket(socket: net.Socket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    const conn = new Connection(socket, this.maxFrameBytes);
    this.connections.add(conn);
    const from = `${conn.remoteAddress}:${conn.remotePort}`;
    let stage: 'hello' | 'register' | 'peer' = 'hello';
    let hello: Hello | undefined;
    let nonce: Buffer | undefined;
    let peer: PeerRecord | undefined;
    const handshakeTimer = setTimeout(() => {
      this.log.warn('handshake timed out; closing connection', { from, timeoutMs: this.handshakeTimeoutMs });
      conn.close(new Error('handshake timeout'));
    }, this.handshakeTimeoutMs);
    handshakeTimer.unref();

    const reject = (code: string, message: string) => {
      clearTimeout(handshakeTimer);
      conn.sendAndClose({ t: 'error', code, message });
    };

    conn.on('close', (reason) => {
      clearTimeout(handshakeTimer);
      this.connections.delete(conn);
      if (peer && peer.conn === conn && !peer.dropped) {
        const why = reason instanceof ProtocolError
          ? `protocol error: ${reason.message}`
          : reason ? `control connection lost: ${reason.message}` : 'control connection closed';
        this.drop(peer, why);
      } else if (reason instanceof ProtocolError) {
        this.log.warn('rejected connection: protocol error', { from, err: reason });
      } else if (stage !== 'peer') {
        this.log.debug('connection closed during handshake', { from, reason });
      }
    });

    conn.on('message', (raw) => {
      try {
        if (stage === 'hello') {
          const m = validateMessage<Hello>(raw, ['hello']);
          if (m.proto !== PROTOCOL_NAME) throw new ProtocolError(`Unknown protocol ${JSON.stringify(m.proto)}; expected "${PROTOCOL_NAME}"`);
          if (m.version !== PROTOCOL_VERSION) {
            this.log.warn('rejected peer: protocol version mismatch', { from, version: m.version, expected: PROTOCOL_VERSION });
            reject('PROTOCOL', `protocol version ${m.version} is not supported: this master speaks version ${PROTOCOL_VERSION}`);
            return;
          }
          hello = m;
          nonce = makeNonce();
          stage = 'register';
          conn.send({ t: 'challenge', version: PROTOCOL_VERSION, nonce, auth: this.token !== undefined });
        } else if (stage === 'register') {
          const m = validateMessage<Register>(raw, ['register']);
          if (this.token !== undefined) {
            const expected = peerProof(this.token, nonce!, hello!.nonce);
            if (!proofMatches(expected, m.proof)) {
              const why = m.proof ? 'wrong run token' : 'no run token given';
              this.log.warn('rejected peer: authentication failed', { from, why });
              reject('AUTH', `authentication failed: ${why} (the master requires the run token)`);
              return;
            }
          }
          clearTimeout(handshakeTimer);
          stage = 'peer';
          peer = hello!.session !== undefined ? this.resume(conn, hello!, m, nonce!) : this.admit(conn, hello!, m, nonce!);
        } else {
          this.onPeerMessage(peer!, raw);
        }
      } catch (err) {
        const e = err instanceof ProtocolError ? err : new ProtocolError(String((err as Error)?.message ?? err));
        this.log.warn(peer ? 'protocol error from peer; dropping it' : 'rejected connection: protocol error', {
          from, peer: peer?.id, err: e,
        });
        if (peer && !peer.dropped) this.drop(peer, `protocol error: ${e.message}`);
        else reject('PROTOCOL', e.message);
      }
    });
  }

  private welcome(conn: Connection, rec: PeerRecord, hello: Hello, nonce: Buffer, resumed: boolean): void {
    conn.send({
      t: 'welcome',
      peer: rec.id,
      session: rec.session,
      secret: rec.secret,
      proof: this.token !== undefined ? masterProof(this.token, hello.nonce, nonce) : undefined,
      observedHost: conn.remoteAddress,
      heartbeatIntervalMs: this.heartbeatIntervalMs,
      peerTimeoutMs: this.peerTimeoutMs,
      resumed,
    });
    conn.startHeartbeat(this.heartbeatIntervalMs, this.peerTimeoutMs, (reason) => {
      if (rec.conn === conn && !rec.dropped) this.drop(rec, reason.message);
      else conn.close(reason);
    });
  }

  private admit(conn: Connection, hello: Hello, m: Register, nonce: Buffer): PeerRecord {
    let g = this.groups.get(m.peerGroup);
    if (!g) {
      g = {
        id: m.peerGroup, epoch: 0, members: [], pending: [], ticket: randomBytes(16), votes: new Map(), voteReplies: [],
        ops: new Map(), committed: new Set(), aborted: new Map(), nextReports: new Map(), syncSeq: 0, stateTags: 0, lastSyncs: new Map(),
      };
      this.groups.set(m.peerGroup, g);
    }
    const rec: PeerRecord = {
      id: `p${this.nextPeer++}`,
      label: m.label,
      group: g,
      conn,
      host: m.advertiseAddress || conn.remoteAddress,
      port: m.dataPort,
      session: randomBytes(12).toString('hex'),
      secret: randomBytes(32),
      member: false,
      dropped: false,
      ackedEpoch: 0,
    };
    this.sessions.set(rec.session, rec);
    this.welcome(conn, rec, hello, nonce, false);
    const fields = { peer: rec.id, label: rec.label, group: g.id, control: `${conn.remoteAddress}:${conn.remotePort}`, data: `${rec.host}:${rec.port}` };
    if (g.members.length === 0 && !g.reforming) {
      this.log.info('peer joined; first of its group, accepted at once', fields);
      this.reform(g, [rec], `${rec.id} started the group`);
    } else {
      g.pending.push(rec);
      this.log.info('peer joined; pending until the group votes it in (updateTopology)', { ...fields, pending: g.pending.length });
      this.broadcastWorld();
    }
    return rec;
  }

  private resume(conn: Connection, hello: Hello, m: Register, nonce: Buffer): PeerRecord | undefined {
    const rec = this.sessions.get(hello.session!);
    if (!rec || rec.dropped || !hello.secret || !timingSafeEqual(rec.secret, Buffer.from(hello.secret)) || rec.group.id !== m.peerGroup) {
      this.log.warn('refused a reconnect: unknown or dropped session', { from: `${conn.remoteAddress}:${conn.remotePort}` });
      conn.sendAndClose({ t: 'error', code: 'DROPPED', message: 'this peer is no longer part of the run (it was dropped, or the master restarted)' });
      return undefined;
    }
    const old = rec.conn;
    rec.conn = conn;
    old.close(new Error('replaced by a reconnect'));
    this.welcome(conn, rec, hello, nonce, true);
    this.log.info('peer reconnected', { peer: rec.id, group: rec.group.id });
    const g = rec.group;
    if (rec.member) {
      this.sendRing(g, rec);
      if (!g.reforming) conn.send({ t: 'ready', epoch: g.epoch });
      for (const key of g.committed) conn.send({ t: 'opCommit', epoch: g.epoch, key });
      for (const [key, a] of g.aborted) conn.send({ t: 'opAbort', epoch: g.epoch, key, code: a.code, message: a.message });
    }
    this.sendWorld(rec);
    return rec;
  }

  // ---- messages of admitted peers ----

  private onPeerMessage(p: PeerRecord, raw: Record<string, unknown>): void {
    if (p.dropped) return;
    const m = validateMessage<Vote | Ack | Done | Fail | Lost | StateReportMsg | StateDoneMsg | { t: 'bye' }>(raw, [
      'vote', 'ack', 'done', 'fail', 'lost', 'bye', 'stateReport', 'stateDone',
    ]);
    const g = p.group;
    switch (m.t) {
      case 'stateReport':
        this.onStateReport(p, m);
        return;
      case 'stateDone':
        this.onStateDone(p, m);
        return;
      case 'vote': {
        if (!p.member) {
          p.conn.send({ t: 'voteResult', id: m.id, ok: false, epoch: g.epoch, accepted: 0, code: 'NOT_MEMBER', message: 'this peer has not been accepted yet' });
          return;
        }
        const ids = g.votes.get(p.id) ?? [];
        ids.push(m.id);
        g.votes.set(p.id, ids);
        this.log.debug('vote', { peer: p.id, group: g.id, votes: g.votes.size, members: g.members.length });
        if (!g.voteTimer) {
          g.voteTimer = setTimeout(() => this.voteTimedOut(g), this.voteTimeoutMs);
          g.voteTimer.unref();
        }
        this.checkVote(g);
        return;
      }
      case 'ack': {
        if (m.epoch > p.ackedEpoch) p.ackedEpoch = m.epoch;
        const r = g.reforming;
        if (r && r.epoch === m.epoch) {
          r.waiting.delete(p.id);
          if (r.waiting.size === 0) this.commitEpoch(g);
        }
        return;
      }
      case 'done': {
        if (m.epoch !== g.epoch || !p.member) return; // superseded: the peer learns it from the new ring
        const a = g.aborted.get(m.key);
        if (a) {
          p.conn.send({ t: 'opAbort', epoch: m.epoch, key: m.key, code: a.code, message: a.message });
          return;
        }
        if (g.committed.has(m.key)) return;
        let set = g.ops.get(m.key);
        if (!set) g.ops.set(m.key, (set = new Set()));
        set.add(p.id);
        this.checkOp(g, m.key);
        return;
      }
      case 'fail': {
        if (m.epoch !== g.epoch || !p.member || g.aborted.has(m.key) || g.committed.has(m.key)) return;
        g.ops.delete(m.key);
        remember(g.aborted, m.key, { code: m.code, message: m.message });
        this.log.info('operation aborted on every peer', { group: g.id, epoch: g.epoch, op: m.key, by: p.id, code: m.code, why: m.message });
        for (const q of g.members) q.conn.send({ t: 'opAbort', epoch: m.epoch, key: m.key, code: m.code, message: `${m.message} (on ${p.id})` });
        return;
      }
      case 'lost': {
        const lostId = m.peer.split('@')[0];
        const lost = g.members.find((q) => q.id === lostId);
        if (m.epoch !== g.epoch || !lost || !p.member) {
          this.log.debug('stale loss report ignored', { peer: p.id, lost: m.peer, epoch: m.epoch, current: g.epoch });
          return;
        }
        this.drop(lost, `reported lost by ${p.id}: ${m.message}`);
        return;
      }
      case 'bye':
        this.drop(p, 'left (closed its communicator)', true);
        return;
    }
  }

  private checkOp(g: GroupState, key: string): void {
    const set = g.ops.get(key);
    if (!set || g.reforming) return;
    if (!g.members.every((q) => set.has(q.id))) return;
    g.ops.delete(key);
    remember(g.committed, key);
    for (const q of g.members) q.conn.send({ t: 'opCommit', epoch: g.epoch, key });
  }

  // ---- votes, epochs and drops ----

  private checkVote(g: GroupState): void {
    if (g.reforming || g.members.length === 0 || g.votes.size === 0) return;
    if (!g.members.every((q) => g.votes.has(q.id))) return;
    if (g.voteTimer) clearTimeout(g.voteTimer);
    g.voteTimer = undefined;
    const voters = g.members.map((q) => ({ peer: q, ids: g.votes.get(q.id)! }));
    g.votes.clear();
    const accept = g.pending.filter((q) => !q.dropped);
    g.pending = [];
    if (accept.length === 0) {
      for (const v of voters) for (const id of v.ids) v.peer.conn.send({ t: 'voteResult', id, ok: true, epoch: g.epoch, accepted: 0 });
      return;
    }
    for (const v of voters) g.voteReplies.push({ ...v, accepted: accept.length });
    this.log.info('vote passed: accepting pending peers', { group: g.id, accepted: accept.map((q) => q.id).join(',') });
    this.reform(g, accept, `accepted ${accept.map((q) => q.id).join(', ')}`);
  }

  private voteTimedOut(g: GroupState): void {
    g.voteTimer = undefined;
    const missing = g.members.filter((q) => !g.votes.has(q.id)).map((q) => q.id);
    const message = `updateTopology timed out after ${this.voteTimeoutMs} ms: ${missing.join(', ')} did not vote`;
    this.log.warn('vote timed out', { group: g.id, missing: missing.join(',') });
    for (const q of g.members) {
      for (const id of g.votes.get(q.id) ?? []) q.conn.send({ t: 'voteResult', id, ok: false, epoch: g.epoch, accepted: 0, code: 'TIMEOUT', message });
    }
    g.votes.clear();
  }

  private sendRing(g: GroupState, to: PeerRecord, reason = 'resend'): void {
    const peers = g.members.map((q) => ({ id: nativePeerId(q), host: q.host, port: q.port }));
    to.conn.send({ t: 'ring', epoch: g.epoch, index: g.members.indexOf(to), peers, ticket: g.ticket, reason });
  }

  /** Installs a new epoch: new members, new ticket; in-flight operations of the old epoch are aborted. */
  private reform(g: GroupState, accept: PeerRecord[], reason: string): void {
    if (g.reforming) clearTimeout(g.reforming.timer);
    g.epoch += 1;
    for (const q of accept) q.member = true;
    g.members.push(...accept);
    g.ticket = randomBytes(16);
    const abortedOps = g.ops.size;
    g.ops.clear();
    g.committed.clear();
    g.aborted.clear();
    this.log.info('group re-formed', {
      group: g.id, epoch: g.epoch, members: g.members.map((q) => q.id).join(','), reason,
      abortedOps: abortedOps || undefined,
    });
    for (const q of g.members) this.sendRing(g, q, reason);
    const sync = g.sync;
    if (sync && sync.phase === 'execute') {
      // The decision was being executed in an older epoch: its transfers fail; re-decide once the ring is ready.
      sync.phase = 'retry';
      this.log.info('shared-state sync interrupted; it restarts when the group is ready', { group: g.id, sync: sync.id, attempt: sync.attempt, reason });
    }
    const timer = setTimeout(() => {
      const r = g.reforming;
      if (!r) return;
      const late = g.members.filter((q) => r.waiting.has(q.id));
      for (const q of late) this.drop(q, `did not install epoch ${r.epoch} within ${this.peerTimeoutMs} ms`);
    }, this.peerTimeoutMs);
    timer.unref();
    g.reforming = { epoch: g.epoch, waiting: new Set(g.members.map((q) => q.id)), timer };
    this.broadcastWorld();
  }

  private commitEpoch(g: GroupState): void {
    const r = g.reforming!;
    clearTimeout(r.timer);
    g.reforming = undefined;
    this.log.debug('epoch ready', { group: g.id, epoch: g.epoch });
    for (const q of g.members) q.conn.send({ t: 'ready', epoch: g.epoch });
    this.stateEpochReady(g);
    const replies = g.voteReplies;
    g.voteReplies = [];
    for (const v of replies) {
      if (v.peer.dropped) continue;
      for (const id of v.ids) v.peer.conn.send({ t: 'voteResult', id, ok: true, epoch: g.epoch, accepted: v.accepted });
    }
    this.checkVote(g);
  }

  private drop(p: PeerRecord, reason: string, quiet = false): void {
    if (p.dropped) return;
    p.dropped = true;
    this.sessions.delete(p.session);
    const g = p.group;
    if (!p.conn.isClosed) p.conn.sendAndClose({ t: 'dropped', reason });
    if (!p.member) {
      g.pending = g.pending.filter((q) => q !== p);
      this.log.info('pending peer left', { peer: p.id, group: g.id, reason });
    } else {
      g.members = g.members.filter((q) => q !== p);
      g.votes.delete(p.id);
      g.nextReports.delete(p.id);
      if (g.sync) {
        g.sync.reports.delete(p.id);
        g.sync.failed.delete(p.id);
        g.sync.done.delete(p.id);
      }
      g.voteReplies = g.voteReplies.filter((v) => v.peer !== p);
      (quiet ? this.log.info : this.log.warn).call(this.log, quiet ? 'peer left' : 'peer dropped', {
        peer: p.id, group: g.id, reason, epoch: g.epoch, survivors: g.members.length,
      });
      if (g.members.length > 0) {
        this.reform(g, [], `${p.id} ${quiet ? 'left' : `dropped: ${reason}`}`);
      } else if (g.pending.length > 0) {
        if (g.reforming) clearTimeout(g.reforming.timer);
        g.reforming = undefined;
        const accept = g.pending;
        g.pending = [];
        this.reform(g, accept, `no members left; accepting pending ${accept.map((q) => q.id).join(', ')}`);
      } else {
        if (g.reforming) clearTimeout(g.reforming.timer);
        if (g.voteTimer) clearTimeout(g.voteTimer);
        if (g.sync?.timer) clearTimeout(g.sync.timer);
        this.groups.delete(g.id);
        this.log.info('group is empty', { group: g.id });
      }
    }
    this.broadcastWorld();
  }

  // ---- shared-state sync ----

  /** A peer's report for a sync (attempt 0: it called syncSharedState; attempt n: it answers stateRetry n). */
  private onStateReport(p: PeerRecord, m: StateReportMsg): void {
    const g = p.group;
    if (!p.member) {
      p.conn.send({ t: 'stateFail', sync: 0, code: 'NOT_MEMBER', message: 'this peer has not been accepted into its group yet' });
      return;
    }
    let report: PeerStateReport;
    try {
      report = validateStateReport({
        peerId: p.id, strategy: m.strategy, revision: m.revision,
        entries: Object.fromEntries(Object.entries(m.entries).map(([k, e]) => [k, { hash: e.hash, byteLength: e.byteLength, dtype: e.dtype as DType }])),
      });
    } catch (err) {
      throw new ProtocolError((err as Error).message);
    }
    let sync = g.sync;
    if (sync && m.attempt === 0 && sync.failed.has(p.id)) {
      // It already finished the current sync (with an error) and starts the next one: keep it for later.
      g.nextReports.set(p.id, report);
      return;
    }
    if (!sync) {
      if (m.attempt !== 0) return; // an answer to a retry of a sync that is over
      sync = this.openSync(g);
    }
    if (m.attempt !== sync.attempt || sync.phase !== 'collect' || sync.failed.has(p.id)) {
      this.log.debug('stale shared-state report ignored', { peer: p.id, attempt: m.attempt, current: sync.attempt, phase: sync.phase });
      return;
    }
    sync.reports.set(p.id, report);
    this.log.debug('shared-state report', { peer: p.id, group: g.id, sync: sync.id, revision: m.revision, strategy: m.strategy, reports: sync.reports.size, members: g.members.length });
    this.checkSyncCollect(g);
  }

  private openSync(g: GroupState): SyncRound {
    const sync: SyncRound = { id: ++g.syncSeq, attempt: 0, phase: 'collect', reports: new Map(), failed: new Map(), done: new Set(), epoch: g.epoch };
    g.sync = sync;
    this.armSyncTimer(g, sync);
    return sync;
  }

  private armSyncTimer(g: GroupState, sync: SyncRound): void {
    if (sync.timer) clearTimeout(sync.timer);
    sync.timer = setTimeout(() => this.syncTimedOut(g, sync), this.voteTimeoutMs);
    sync.timer.unref();
  }

  /** Members that still take part in the sync (those that failed it are out). */
  private syncParticipants(g: GroupState, sync: SyncRound): PeerRecord[] {
    return g.members.filter((q) => !sync.failed.has(q.id));
  }

  private syncTimedOut(g: GroupState, sync: SyncRound): void {
    if (g.sync !== sync || sync.phase !== 'collect') return;
    const missing = this.syncParticipants(g, sync).filter((q) => !sync.reports.has(q.id)).map((q) => q.id);
    const message = `syncSharedState timed out after ${this.voteTimeoutMs} ms: ${missing.join(', ') || 'nobody'} did not call it (every member of the group must)`;
    this.log.warn('shared-state sync timed out', { group: g.id, sync: sync.id, missing: missing.join(',') });
    for (const q of this.syncParticipants(g, sync)) q.conn.send({ t: 'stateFail', sync: sync.id, code: 'TIMEOUT', message });
    this.finishSync(g, sync);
  }

  private checkSyncCollect(g: GroupState): void {
    const sync = g.sync;
    if (!sync || sync.phase !== 'collect' || g.reforming) return;
    const parts = this.syncParticipants(g, sync);
    if (parts.length === 0) {
      this.finishSync(g, sync);
      return;
    }
    if (!parts.every((q) => sync.reports.has(q.id))) return;
    const reports = parts.map((q) => sync.reports.get(q.id)!);
    // The previous sync of this state: the layout most reports share that the group synced before.
    const layouts = new Map<string, number>();
    for (const r of reports) {
      const l = layoutOf(r.entries);
      if (g.lastSyncs.has(l)) layouts.set(l, (layouts.get(l) ?? 0) + 1);
    }
    const layout = [...layouts].sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : 1))[0]?.[0];
    const decision = electSharedState(reports, { previous: layout === undefined ? undefined : g.lastSyncs.get(layout) });
    for (const [peer, f] of Object.entries(decision.failures)) sync.failed.set(peer, f.code);
    // sendOnly peers in conflict leave the group first, so the decision runs in the epoch without them.
    const dropped = decision.drop.map((id) => g.members.find((q) => q.id === id)).filter((q): q is PeerRecord => q !== undefined);
    const tag = STATE_TAG_BASE + (g.stateTags++ % 2 ** 40) * STATE_TAG_SPAN;
    const send = (q: PeerRecord, epoch: number) =>
      q.conn.send({ t: 'stateDecision', sync: sync.id, attempt: sync.attempt, epoch, tag, decision });
    for (const q of dropped) send(q, g.epoch);
    for (const q of dropped) this.drop(q, `${decision.failures[q.id]?.message ?? 'sendOnly conflict'}`);
    if (g.sync !== sync) return; // the group emptied
    sync.phase = 'execute';
    sync.decision = decision;
    sync.epoch = g.epoch;
    if (sync.timer) clearTimeout(sync.timer);
    sync.timer = undefined;
    const notable = decision.transfers.length > 0 || Object.keys(decision.failures).length > 0 || sync.attempt > 0;
    (notable ? this.log.info : this.log.debug).call(this.log, 'shared-state elected', {
      group: g.id, sync: sync.id, attempt: sync.attempt || undefined, revision: decision.revision, sources: decision.sources.join(',') || undefined,
      outdated: Object.keys(decision.outdated).join(',') || undefined, failed: Object.keys(decision.failures).join(',') || undefined,
      transfers: decision.transfers.length,
    });
    for (const q of g.members) if (reports.some((r) => r.peerId === q.id)) send(q, g.epoch);
    this.checkSyncDone(g);
  }

  private onStateDone(p: PeerRecord, m: StateDoneMsg): void {
    const g = p.group;
    const sync = g.sync;
    if (!sync || (m.sync !== undefined && m.sync !== sync.id) || sync.failed.has(p.id)) return;
    if (!m.ok) {
      // This peer gives up on the sync (its own error, a timeout, an abort): the others go on without it.
      sync.failed.set(p.id, m.code ?? 'INTERNAL');
      sync.reports.delete(p.id);
      this.log.info('a peer failed the shared-state sync', { peer: p.id, group: g.id, sync: sync.id, code: m.code, why: m.message });
      if (sync.phase === 'collect') this.checkSyncCollect(g);
      else this.checkSyncDone(g);
      return;
    }
    if (m.attempt !== sync.attempt || sync.phase !== 'execute') return;
    sync.done.add(p.id);
    this.checkSyncDone(g);
  }

  private checkSyncDone(g: GroupState): void {
    const sync = g.sync;
    if (!sync || sync.phase !== 'execute' || g.reforming || g.epoch !== sync.epoch) return;
    const parts = this.syncParticipants(g, sync);
    if (!parts.every((q) => sync.done.has(q.id))) return;
    const decision = sync.decision!;
    if (sync.done.size > 0) {
      const layout = layoutOf(decision.entries);
      g.lastSyncs.delete(layout);
      g.lastSyncs.set(layout, { revision: decision.revision, peers: [...sync.done].sort() });
      if (g.lastSyncs.size > MAX_REMEMBERED_STATES) g.lastSyncs.delete(g.lastSyncs.keys().next().value as string);
      for (const q of parts) q.conn.send({ t: 'stateCommit', sync: sync.id, revision: decision.revision });
      const notable = decision.transfers.length > 0 || sync.attempt > 0;
      (notable ? this.log.info : this.log.debug).call(this.log, 'shared state synced', { group: g.id, sync: sync.id, revision: decision.revision, peers: sync.done.size, attempts: sync.attempt + 1 });
    }
    this.finishSync(g, sync);
  }

  /** Called when a new epoch is ready: re-checks a collecting sync, restarts an interrupted one. */
  private stateEpochReady(g: GroupState): void {
    const sync = g.sync;
    if (!sync) return;
    if (sync.phase === 'collect') {
      this.checkSyncCollect(g);
      return;
    }
    if (sync.phase === 'execute') {
      this.checkSyncDone(g);
      return;
    }
    if (sync.phase === 'retry') {
      sync.attempt += 1;
      sync.phase = 'collect';
      sync.reports.clear();
      sync.done.clear();
      sync.decision = undefined;
      this.armSyncTimer(g, sync);
      const reason = `group ${g.id} re-formed (epoch ${g.epoch}) during the transfer`;
      for (const q of this.syncParticipants(g, sync)) q.conn.send({ t: 'stateRetry', sync: sync.id, attempt: sync.attempt, reason });
    }
  }

  private finishSync(g: GroupState, sync: SyncRound): void {
    if (sync.timer) clearTimeout(sync.timer);
    if (g.sync !== sync) return;
    g.sync = undefined;
    if (g.nextReports.size > 0) {
      const next = this.openSync(g);
      for (const [id, r] of g.nextReports) if (g.members.some((q) => q.id === id)) next.reports.set(id, r);
      g.nextReports.clear();
      this.checkSyncCollect(g);
    }
  }

  private sendWorld(p: PeerRecord): void {
    let worldSize = 0;
    let peerGroups = 0;
    for (const g of this.groups.values()) {
      worldSize += g.members.length;
      if (g.members.length > 0) peerGroups += 1;
    }
    p.conn.send({ t: 'world', worldSize, groupWorldSize: p.group.members.length, peerGroups, pending: p.group.pending.length });
  }

  private broadcastWorld(): void {
    if (this.closed) return;
    for (const g of this.groups.values()) {
      for (const q of g.members) this.sendWorld(q);
      for (const q of g.pending) this.sendWorld(q);
    }
  }
}
