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
import { monotonicMs } from '../clock';
import { ProtocolError } from '../errors';
import type { MasterMsg, PeerMsg } from '../protocol';
import { GroupContext, Peer, SolveJob } from './context';
import { Feed } from './feed';
import { Group, GroupInfo } from './group';
import type { Solution } from '../topology/solver';
import { RejoinReport, allReported, checkAgainstLive, checkAgainstReports, checkReport, peerNumber, planRebuild } from './resume';

export interface CoordinatorOptions {
  /** How long a vote or a shared-state sync waits for every member, ms (default 60000). */
  voteTimeoutMs?: number;
  /** How long a member has to acknowledge a new ring, ms (default 3000: the peer timeout). */
  ackTimeoutMs?: number;
  /** A peer whose heartbeats say its JavaScript thread has been busy this long is dropped as hung, ms (default 300000). */
  jsHangTimeoutMs?: number;
  /** The clock for deadlines (default monotonicMs, lib/clock.ts). */
  now?: () => number;
  /** The clock of the feed's timestamps, shown to humans (default Date.now; `now` when `now` is given). */
  wallClock?: () => number;
  /** Random bytes for ring tickets (default crypto.randomBytes). */
  random?: (n: number) => Uint8Array;
  /** Events kept in the feed (default 1000). */
  feedCapacity?: number;
  /** How long a group's rebuild from its peers' reports waits for the members it expects, ms (default 5000). */
  resumeWindowMs?: number;
  /** When a peer's control connection last carried a heartbeat (`now` clock): a loss report is then weighed (evidence.ts). */
  lastSeen?: (peer: string) => number | undefined;
}

/** A group being rebuilt from its peers' reports (resume.ts): what arrived so far, until its window ends. */
interface Rebuilding {
  deadline: number;
  reports: Map<string, RejoinReport>;
  /** Messages of its peers, replayed once the group is rebuilt (e.g. the votes they said again). */
  queue: CoordinatorEvent[];
  /** Brand-new peers of the group: pending once it is rebuilt. */
  joiners: Peer[];
}

/** Something happened to the master's peers. */
export type CoordinatorEvent =
  /** A peer passed the handshake (its id from {@link Coordinator.newPeerId}); it joins its group. */
  | { type: 'join'; peer: string; group: number; host: string; port: number; label?: string; autoAdmit?: boolean; identity?: Uint8Array }
  /** A known peer's control connection was replaced by a new one: resend what it may have missed. */
  | { type: 'resume'; peer: string }
  /**
   * A peer this master does not know resumed its session (a restarted master), with its report: it keeps its id
   * and helps rebuild its group. Check it with {@link Coordinator.checkRejoin} first.
   */
  | ({ type: 'rejoin' } & RejoinReport)
  /** A registered peer sent a (validated) message. */
  | { type: 'message'; peer: string; msg: PeerMsg }
  /** A peer is gone: connection closed, silent past its deadline, or a protocol error. */
  | { type: 'lost'; peer: string; reason: string }
  /** A peer's heartbeat said its JavaScript thread has been busy for `ms` (0: it is not any more). */
  | { type: 'busy'; peer: string; ms: number }
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
  private readonly rebuilding = new Map<number, Rebuilding>();
  private readonly resumeWindowMs: number;
  private readonly jsHangTimeoutMs: number;
  private readonly ctx: GroupContext;
  private nextPeer = 1;
  private out: Effect[] = [];
  private worldDirty = false;

  constructor(options: CoordinatorOptions = {}) {
    const now = options.now ?? monotonicMs;
    const random = options.random ?? ((n: number) => new Uint8Array(randomBytes(n)));
    this.feed = new Feed(options.wallClock ?? options.now ?? Date.now, options.feedCapacity);
    this.resumeWindowMs = options.resumeWindowMs ?? 5000;
    this.jsHangTimeoutMs = options.jsHangTimeoutMs ?? 300_000;
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
      lastSeen: options.lastSeen,
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

  /** Groups being rebuilt from their peers' reports, and who reported so far. */
  rebuildsInfo(): { peerGroup: number; reported: string[] }[] {
    return [...this.rebuilding].map(([peerGroup, r]) => ({ peerGroup, reported: [...r.reports.keys()] }));
  }

  /**
   * Whether a peer unknown to this master may resume with this report: undefined, or what is wrong with it (the
   * master refuses the peer with that message and nothing else changes).
   */
  checkRejoin(r: RejoinReport): string | undefined {
    if (this.peers.has(r.peer)) return `peer ${r.peer} is already connected to this master (two processes with one session?)`;
    const bad = checkReport(r);
    if (bad) return bad;
    const g = this.groups.get(r.group);
    if (g) return checkAgainstLive(r, g.epoch, (layout) => g.sync.lastRevision(layout));
    const rebuilding = this.rebuilding.get(r.group);
    return rebuilding ? checkAgainstReports(r, rebuilding.reports.values()) : undefined;
  }

  /** The earliest time a tick has something to do (undefined when nothing waits). */
  nextDeadline(): number | undefined {
    let min: number | undefined;
    for (const r of this.rebuilding.values()) if (min === undefined || r.deadline < min) min = r.deadline;
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
      for (const [id, r] of [...this.rebuilding]) if (now >= r.deadline) this.completeRebuild(id, 'its resume window ended');
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
      const p: Peer = { id: e.peer, group: e.group, host: e.host, port: e.port, label: e.label, autoAdmit: e.autoAdmit, identity: e.identity, member: false, dropped: false };
      this.peers.set(p.id, p);
      const rebuilding = this.rebuilding.get(e.group);
      if (rebuilding) {
        rebuilding.joiners.push(p);
        this.feed.count('peersJoined');
        this.feed.emit('info', 'peer joined while its group is being rebuilt; pending', { peer: p.id, group: e.group });
        return;
      }
      let g = this.groups.get(e.group);
      if (!g) this.groups.set(e.group, (g = new Group(e.group, this.ctx)));
      g.admit(p);
      return;
    }
    if (e.type === 'rejoin') return this.rejoin(e);
    const p = this.peers.get(e.peer);
    if (!p) return; // dropped meanwhile
    if (e.type === 'busy') return this.onBusy(p, e.ms);
    const rebuilding = this.rebuilding.get(p.group);
    if (rebuilding) {
      if (e.type === 'lost') {
        this.peers.delete(p.id);
        p.dropped = true;
        rebuilding.reports.delete(p.id);
        rebuilding.joiners = rebuilding.joiners.filter((q) => q !== p);
        this.out.push({ type: 'drop', peer: p.id, reason: e.reason });
        this.feed.emit('warn', 'peer lost while its group is being rebuilt', { peer: p.id, group: p.group, reason: e.reason });
      } else if (e.type === 'message') {
        rebuilding.queue.push(e);
      }
      return;
    }
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

  /**
   * A peer is alive (its heartbeats, from its control thread, go on) but its JavaScript thread is busy: fine for
   * up to jsHangTimeoutMs, measured on this master's clock from the first report of the busy period; then it is
   * dropped as hung. docs/master.md, "Liveness".
   */
  private onBusy(p: Peer, ms: number): void {
    const now = this.ctx.now();
    if (ms === 0) {
      p.busy = undefined;
      return;
    }
    const ongoing = p.busy && now - p.busy.seen <= this.ctx.ackTimeoutMs ? p.busy : undefined;
    if (!ongoing) this.feed.emit('debug', 'peer busy: its JavaScript thread is blocked, its heartbeats go on', { peer: p.id, ms });
    p.busy = { since: Math.min(ongoing?.since ?? Infinity, now - ms), seen: now };
    const blocked = now - p.busy.since;
    if (blocked >= this.jsHangTimeoutMs) {
      this.handle({ type: 'lost', peer: p.id, reason: `JavaScript thread blocked for ${Math.round(blocked)} ms (jsHangTimeoutMs ${this.jsHangTimeoutMs})` });
    }
  }

  private rejoin(r: RejoinReport): void {
    // New ids of this master never collide with the ones its peers kept.
    for (const id of [r.peer, ...r.report.ring.map((q) => q.id)]) this.nextPeer = Math.max(this.nextPeer, peerNumber(id) + 1);
    const p: Peer = { id: r.peer, group: r.group, host: r.host, port: r.port, label: r.label, autoAdmit: r.autoAdmit, identity: r.identity, member: false, dropped: false };
    this.peers.set(p.id, p);
    const g = this.groups.get(r.group);
    if (g) {
      g.rejoinLate(p, r.report.member);
      return;
    }
    let rebuilding = this.rebuilding.get(r.group);
    if (!rebuilding) {
      rebuilding = { deadline: this.ctx.now() + this.resumeWindowMs, reports: new Map(), queue: [], joiners: [] };
      this.rebuilding.set(r.group, rebuilding);
      this.feed.emit('info', 'rebuilding a group from its peers\' reports', { group: r.group, windowMs: this.resumeWindowMs });
    }
    rebuilding.reports.set(p.id, r);
    this.feed.emit('info', 'peer resumed its session', { peer: p.id, group: r.group, epoch: r.report.epoch, member: r.report.member, reported: rebuilding.reports.size });
    if (allReported(rebuilding.reports)) this.completeRebuild(r.group, 'every member of the newest ring reported');
  }

  /** Forms a group being rebuilt from what its peers reported (resume.ts), then replays their queued messages. */
  private completeRebuild(groupId: number, why: string): void {
    const rebuilding = this.rebuilding.get(groupId)!;
    this.rebuilding.delete(groupId);
    const plan = planRebuild([...rebuilding.reports.values()]);
    const live = (id: string) => this.peers.get(id);
    for (const x of plan.excluded) {
      const p = live(x.peer);
      if (p) this.drop(p, x.reason);
    }
    let members = plan.members.map(live).filter((p): p is Peer => p !== undefined);
    let pending = [...plan.pending.map(live).filter((p): p is Peer => p !== undefined), ...rebuilding.joiners.filter((p) => !p.dropped)];
    if (members.length === 0) [members, pending] = [pending, []];
    if (members.length === 0) return;
    for (const c of plan.commits) this.out.push({ type: 'send', to: c.to, msg: { t: 'opCommit', epoch: plan.fromEpoch, key: c.key } });
    if (plan.stateCommit) {
      for (const to of plan.stateCommit.to) this.out.push({ type: 'send', to, msg: { t: 'stateCommit', sync: plan.stateCommit.sync, revision: plan.stateCommit.revision } });
    }
    const g = new Group(groupId, this.ctx);
    this.groups.set(groupId, g);
    g.sync.restore(plan.sync);
    for (const id of plan.voteCatchUp) g.voteCatchUp.add(id);
    this.feed.emit('info', 'group rebuilt from its peers\' reports', {
      group: groupId, why, fromEpoch: plan.fromEpoch, members: members.map((p) => p.id).join(','), pending: pending.map((p) => p.id).join(',') || undefined,
      missing: [...new Set(plan.excluded.map((x) => x.peer))].join(',') || undefined, commits: plan.commits.length || undefined,
    });
    g.rebuild(plan.fromEpoch, members, pending, `rebuilt after the master restarted (${why})`);
    for (const e of rebuilding.queue) this.handle(e);
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
    this.out.push({ type: 'send', to: p.id, msg: { t: 'world', ...totals, groupWorldSize: g.members.length, pending: g.pending.length, ...pendingNames(g.pending) } });
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

/** The first pending peers, named for a member's error messages (`p7 worker-3`), within the wire's id limit. */
function pendingNames(pending: readonly Peer[]): { pendingPeers?: string[] } {
  if (pending.length === 0) return {};
  return { pendingPeers: pending.slice(0, 16).map((q) => (q.label ? `${q.id} ${q.label}` : q.id).slice(0, 64)) };
}
