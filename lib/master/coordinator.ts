/**
 * The master's whole state as a pure state machine: every registered peer and every group. It consumes events
 * (a peer joined, resumed, sent a message, was lost; time passed) and returns effects (messages to send, peers
 * to drop). It owns no socket and no timer: the socket server (master.ts) feeds it, and tests drive it
 * in-process with a fake clock. What happened is recorded in {@link Coordinator.feed} (events and counters).
 *
 * @example
 * ```ts
 * let now = 0;
 * const core = new Coordinator({ now: () => now });
 * const a = core.newPeerId();
 * core.apply({ type: 'join', peer: a, group: 0, host: '10.0.0.1', port: 4000 }); // -> [send a ring]
 * core.apply({ type: 'message', peer: a, msg: { t: 'ack', epoch: 1 } });          // -> [send a ready]
 * now += 60_000;
 * core.apply({ type: 'tick' });                                                   // deadlines that passed
 * ```
 */
import { randomBytes } from 'node:crypto';
import { ProtocolError } from '../errors';
import type { MasterMsg, PeerMsg } from '../protocol';
import { GroupContext, Peer, SolveJob } from './context';
import { Feed } from './feed';
import { Group, GroupInfo } from './group';
import type { Solution } from '../topology/solver';

export interface CoordinatorOptions {
  /** How long a vote or a shared-state sync waits for every member, ms (default 60000). */
  voteTimeoutMs?: number;
  /** How long a member has to acknowledge a new ring, ms (default 3000: the peer timeout). */
  ackTimeoutMs?: number;
  /** The clock (default Date.now). */
  now?: () => number;
  /** Random bytes for ring tickets (default crypto.randomBytes). */
  random?: (n: number) => Uint8Array;
  /** Events kept in the feed (default 1000). */
  feedCapacity?: number;
}

/** Something happened to the master's peers. */
export type CoordinatorEvent =
  /** A peer passed the handshake (its id from {@link Coordinator.newPeerId}); it joins its group. */
  | { type: 'join'; peer: string; group: number; host: string; port: number; label?: string }
  /** A known peer's control connection was replaced by a new one: resend what it may have missed. */
  | { type: 'resume'; peer: string }
  /** A registered peer sent a (validated) message. */
  | { type: 'message'; peer: string; msg: PeerMsg }
  /** A peer is gone: connection closed, silent past its deadline, or a protocol error. */
  | { type: 'lost'; peer: string; reason: string }
  /** Time passed: act on every deadline up to now. */
  | { type: 'tick' }
  /** The solver answered a `solve` effect (with a solution, or the error it failed with). */
  | { type: 'solved'; group: number; round: number; solution?: Solution; error?: string };

/** What the socket server must do. */
export type Effect =
  | { type: 'send'; to: string; msg: MasterMsg }
  /** Tell the peer `dropped { reason }` if its connection is still open, close it, and forget its session. */
  | { type: 'drop'; peer: string; reason: string }
  /** Solve a ring order off the control loop (a worker thread), then apply a `solved` event. */
  | ({ type: 'solve' } & SolveJob);

/** A peer as the master sees it (read-only). */
export type PeerView = Readonly<Peer>;

export class Coordinator {
  readonly feed: Feed;
  private readonly peers = new Map<string, Peer>();
  private readonly groups = new Map<number, Group>();
  private readonly ctx: GroupContext;
  private nextPeer = 1;
  private out: Effect[] = [];
  private worldDirty = false;

  constructor(options: CoordinatorOptions = {}) {
    const now = options.now ?? Date.now;
    const random = options.random ?? ((n: number) => new Uint8Array(randomBytes(n)));
    this.feed = new Feed(now, options.feedCapacity);
    this.ctx = {
      now,
      random,
      feed: this.feed,
      voteTimeoutMs: options.voteTimeoutMs ?? 60_000,
      ackTimeoutMs: options.ackTimeoutMs ?? 3000,
      send: (to, msg) => this.out.push({ type: 'send', to: to.id, msg }),
      drop: (peer, reason, quiet) => this.drop(peer, reason, quiet),
      worldChanged: () => {
        this.worldDirty = true;
      },
      solve: (job) => this.out.push({ type: 'solve', ...job }),
    };
  }

  /** A fresh peer id (`p1`, `p2`, ...) for a peer about to join. */
  newPeerId(): string {
    return `p${this.nextPeer++}`;
  }

  /** A registered peer, or undefined once it was dropped. */
  peer(id: string): PeerView | undefined {
    return this.peers.get(id);
  }

  /** Every group, by id. */
  groupsInfo(): GroupInfo[] {
    return [...this.groups.values()].map((g) => g.info());
  }

  /** The earliest time a tick has something to do (undefined when nothing waits). */
  nextDeadline(): number | undefined {
    let min: number | undefined;
    for (const g of this.groups.values()) {
      const d = g.nextDeadline();
      if (d !== undefined && (min === undefined || d < min)) min = d;
    }
    return min;
  }

  /** Applies one event and returns what to do, in order. */
  apply(event: CoordinatorEvent): Effect[] {
    this.out = [];
    this.handle(event);
    if (this.worldDirty) this.broadcastWorld();
    const out = this.out;
    this.out = [];
    return out;
  }

  private handle(e: CoordinatorEvent): void {
    if (e.type === 'tick') {
      const now = this.ctx.now();
      for (const g of [...this.groups.values()]) g.tick(now);
      this.removeEmptyGroups();
      return;
    }
    if (e.type === 'solved') {
      this.groups.get(e.group)?.topology.onSolved(e.round, e.solution, e.error);
      return;
    }
    if (e.type === 'join') {
      if (this.peers.has(e.peer)) throw new Error(`peer ${e.peer} joined twice`);
      const p: Peer = { id: e.peer, group: e.group, host: e.host, port: e.port, label: e.label, member: false, dropped: false };
      this.peers.set(p.id, p);
      let g = this.groups.get(e.group);
      if (!g) this.groups.set(e.group, (g = new Group(e.group, this.ctx)));
      g.admit(p);
      return;
    }
    const p = this.peers.get(e.peer);
    if (!p) return; // dropped meanwhile
    const g = this.groups.get(p.group)!;
    if (e.type === 'lost') {
      this.drop(p, e.reason);
    } else if (e.type === 'resume') {
      g.resumed(p);
      this.sendWorld(p, this.worldTotals());
    } else {
      try {
        this.onMessage(p, g, e.msg);
      } catch (err) {
        if (!(err instanceof ProtocolError)) throw err;
        this.feed.emit('warn', 'protocol error from peer; dropping it', { peer: p.id, err });
        this.drop(p, `protocol error: ${err.message}`);
      }
    }
    this.removeEmptyGroups();
  }

  private onMessage(p: Peer, g: Group, m: PeerMsg): void {
    switch (m.t) {
      case 'vote': return g.onVote(p, m.id);
      case 'ack': return g.onAck(p, m.epoch);
      case 'done': return g.onDone(p, m);
      case 'fail': return g.onFail(p, m);
      case 'lost': return g.onLost(p, m);
      case 'bye': return this.drop(p, 'left (closed its communicator)', true);
      case 'stateReport': return g.sync.onReport(p, m);
      case 'stateDone': return g.sync.onDone(p, m);
      case 'topoStart': return g.topology.onStart(p, m);
      case 'topoReport': return g.topology.onReport(p, m);
    }
  }

  private drop(p: Peer, reason: string, quiet = false): void {
    if (p.dropped) return;
    p.dropped = true;
    this.peers.delete(p.id);
    this.feed.count(quiet ? 'peersLeft' : 'peersDropped');
    this.out.push({ type: 'drop', peer: p.id, reason });
    this.groups.get(p.group)?.remove(p, reason, quiet);
    this.worldDirty = true;
  }

  private removeEmptyGroups(): void {
    for (const [id, g] of this.groups) if (g.isEmpty) this.groups.delete(id);
  }

  private worldTotals(): { worldSize: number; peerGroups: number } {
    let worldSize = 0;
    let peerGroups = 0;
    for (const g of this.groups.values()) {
      worldSize += g.members.length;
      if (g.members.length > 0) peerGroups += 1;
    }
    return { worldSize, peerGroups };
  }

  private sendWorld(p: Peer, totals: { worldSize: number; peerGroups: number }): void {
    const g = this.groups.get(p.group);
    if (!g) return;
    this.out.push({ type: 'send', to: p.id, msg: { t: 'world', ...totals, groupWorldSize: g.members.length, pending: g.pending.length } });
  }

  private broadcastWorld(): void {
    this.worldDirty = false;
    const totals = this.worldTotals();
    for (const g of this.groups.values()) {
      for (const q of g.members) this.sendWorld(q, totals);
      for (const q of g.pending) this.sendWorld(q, totals);
    }
  }
}
