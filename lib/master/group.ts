/**
 * One peer group as a state machine: membership, epochs, votes, operation commits and drops. It reacts to what
 * its members say and to the clock, and acts only through its {@link GroupContext} (send a message, drop a
 * peer), so every path can be driven in-process by a test.
 *
 * The rules (docs/master.md):
 * - Every change of the ring bumps the epoch and sends each member `ring` with a fresh ticket; the member
 *   installs it (which fails its operations of older epochs) and answers `ack`. When every member has, the
 *   master sends `ready`. A member that does not acknowledge within `ackTimeoutMs` is dropped, unless its
 *   heartbeats say its JavaScript thread is busy (it acknowledges once free, or is dropped as hung).
 * - A vote (`updateTopology`) completes when every member has voted; it accepts every pending peer in one new
 *   epoch, or is a plain barrier when nobody waits.
 * - An operation commits when every member reported it `done` in the current epoch; one member's `fail`
 *   aborts it everywhere; a re-form supersedes every operation of the old epoch (the `ring` says so).
 */
import type { Msg } from '../protocol';
import { GroupAdmission } from './admission';
import { GroupContext, Peer, masterIdOf, nativePeerId, rememberBounded } from './context';
import { Evidence } from './evidence';
import { StateSync } from './sync';
import { GroupTopology } from './topology';

/** Operation keys a group remembers as committed or aborted in the current epoch (to answer late reports). */
const MAX_REMEMBERED_OPS = 4096;

/** A snapshot of a group, for tests, tools and logs. */
export interface GroupInfo {
  peerGroup: number;
  epoch: number;
  /** Member ids in ring order. */
  members: string[];
  pending: string[];
}

export class Group {
  epoch = 0;
  members: Peer[] = [];
  pending: Peer[] = [];
  private ticket: Uint8Array;
  /** The epoch being installed: members that have not acknowledged it yet. */
  private installing?: { epoch: number; waiting: Set<string>; deadline: number; started: number };
  /** Member id -> request ids of its updateTopology calls in the open vote. */
  private readonly votes = new Map<string, number[]>();
  private voteDeadline?: number;
  /** When the open vote's first vote arrived (for its latency). */
  private voteStarted = 0;
  /** Vote replies to send once the epoch being installed is ready. */
  private voteReplies: { peer: Peer; ids: number[]; accepted: number }[] = [];
  /** Members whose last vote passed before a master crash cut its result off (resume.ts): answered at once. */
  readonly voteCatchUp = new Set<string>();
  /** Operation key -> members that finished it, in the current epoch. */
  private readonly ops = new Map<string, Set<string>>();
  /** Committed key -> whether its commit announced an admission vote (said again to a reconnecting member). */
  private readonly committed = new Map<string, boolean>();
  private readonly aborted = new Map<string, { code: string; message: string }>();
  readonly sync: StateSync;
  /** optimizeTopology: the link matrix and the open round (topology.ts). */
  readonly topology: GroupTopology;
  /** Votes announced on commits for members with `admission: 'auto'` (admission.ts). */
  readonly admission = new GroupAdmission();
  /** Loss reports weighed before anyone is dropped (evidence.ts). */
  private readonly evidence: Evidence;
  /** Members being dropped on an evidence verdict (not vindicating their accusers). */
  private readonly judged = new Set<string>();

  constructor(readonly id: number, private readonly ctx: GroupContext) {
    this.ticket = ctx.random(16);
    this.sync = new StateSync(this, ctx);
    this.topology = new GroupTopology(this, ctx);
    this.evidence = new Evidence({ silentMs: Math.max(1, ctx.ackTimeoutMs / 2) });
  }

  /** A new ring is being installed. */
  get reforming(): boolean {
    return this.installing !== undefined;
  }

  get isEmpty(): boolean {
    return this.members.length === 0 && this.pending.length === 0;
  }

  info(): GroupInfo {
    return { peerGroup: this.id, epoch: this.epoch, members: this.members.map((m) => m.id), pending: this.pending.map((m) => m.id) };
  }

  /** The earliest time something here times out. */
  nextDeadline(): number | undefined {
    const ds = [this.installing?.deadline, this.voteDeadline, this.sync.deadline, this.topology.deadline].filter((d): d is number => d !== undefined);
    return ds.length ? Math.min(...ds) : undefined;
  }

  /** A registered peer of this group: the first one forms the group, later ones wait for a vote. */
  admit(p: Peer): void {
    this.ctx.feed.count('peersJoined');
    const fields = { peer: p.id, label: p.label, group: this.id, data: `${p.host}:${p.port}` };
    if (this.members.length === 0 && !this.installing) {
      this.ctx.feed.emit('info', 'peer joined; first of its group, accepted at once', fields);
      this.reform([p], `${p.id} started the group`);
    } else {
      this.pending.push(p);
      this.ctx.feed.emit('info', 'peer joined; pending until the group votes it in (updateTopology)', { ...fields, pending: this.pending.length });
      this.ctx.worldChanged();
    }
  }

  /**
   * A master rebuilt from its peers' reports (resume.ts, coordinator.ts): the group goes on at the epoch above
   * every reported one, with the members that reported and the peers that were still waiting for a vote.
   */
  rebuild(fromEpoch: number, members: Peer[], pending: Peer[], reason: string): void {
    this.epoch = fromEpoch;
    this.pending.push(...pending);
    this.reform(members, reason);
  }

  /** A peer resumed its session after its group was rebuilt: a member is taken back at once (it needs no vote). */
  rejoinLate(p: Peer, member: boolean): void {
    if (!member) {
      this.pending.push(p);
      this.ctx.feed.emit('info', 'pending peer resumed its session', { peer: p.id, group: this.id });
      this.ctx.worldChanged();
      return;
    }
    this.reform([p], `${p.id} resumed its session after the master restarted`);
  }

  /** A peer's control connection came back: whatever was sent while it was away is said again. */
  resumed(p: Peer): void {
    this.ctx.feed.emit('info', 'peer reconnected', { peer: p.id, group: this.id });
    if (!p.member) return;
    this.sendRing(p, 'resend');
    if (!this.installing) this.ctx.send(p, { t: 'ready', epoch: this.epoch });
    for (const [key, admit] of this.committed) this.ctx.send(p, { t: 'opCommit', epoch: this.epoch, key, ...(admit ? { admit } : {}) });
    for (const [key, a] of this.aborted) this.ctx.send(p, { t: 'opAbort', epoch: this.epoch, key, code: a.code, message: a.message });
    this.topology.resumed(p);
  }

  onVote(p: Peer, id: number): void {
    if (!p.member) {
      this.ctx.send(p, { t: 'voteResult', id, ok: false, epoch: this.epoch, accepted: 0, code: 'NOT_MEMBER', message: 'this peer has not been accepted yet' });
      return;
    }
    if (this.voteCatchUp.delete(p.id)) {
      this.ctx.send(p, { t: 'voteResult', id, ok: true, epoch: this.epoch, accepted: 0 });
      return;
    }
    const ids = this.votes.get(p.id) ?? [];
    ids.push(id);
    this.votes.set(p.id, ids);
    this.ctx.feed.emit('debug', 'vote', { peer: p.id, group: this.id, votes: this.votes.size, members: this.members.length });
    if (this.voteDeadline === undefined) {
      this.voteStarted = this.ctx.now();
      this.voteDeadline = this.voteStarted + this.ctx.voteTimeoutMs;
    }
    this.checkVote();
  }

  onAck(p: Peer, epoch: number): void {
    const r = this.installing;
    if (!r || r.epoch !== epoch) return;
    r.waiting.delete(p.id);
    if (r.waiting.size === 0) this.epochReady();
  }

  onDone(p: Peer, m: Msg<'done'>): void {
    if (m.epoch !== this.epoch || !p.member) return; // superseded: the peer learns it from the new ring
    const a = this.aborted.get(m.key);
    if (a) {
      this.ctx.send(p, { t: 'opAbort', epoch: m.epoch, key: m.key, code: a.code, message: a.message });
      return;
    }
    if (this.committed.has(m.key)) return;
    let set = this.ops.get(m.key);
    if (!set) this.ops.set(m.key, (set = new Set()));
    set.add(p.id);
    this.checkOp(m.key);
  }

  onFail(p: Peer, m: Msg<'fail'>): void {
    if (m.epoch !== this.epoch || !p.member || this.aborted.has(m.key) || this.committed.has(m.key)) return;
    this.ops.delete(m.key);
    rememberBounded(this.aborted, m.key, { code: m.code, message: m.message }, MAX_REMEMBERED_OPS);
    this.ctx.feed.count('opsAborted');
    this.ctx.feed.emit('info', 'operation aborted on every peer', { group: this.id, epoch: this.epoch, op: m.key, by: p.id, code: m.code, why: m.message });
    for (const q of this.members) this.ctx.send(q, { t: 'opAbort', epoch: m.epoch, key: m.key, code: m.code, message: `${m.message} (on ${p.id})` });
  }

  onLost(p: Peer, m: Msg<'lost'>): void {
    const lost = this.members.find((q) => q.id === masterIdOf(m.peer));
    if (m.epoch !== this.epoch || !lost || !p.member) {
      // Too late to act on, but the same failure seen by another member: evidence for the next report.
      if (m.epoch < this.epoch && lost && p.member) this.evidence.record({ accuser: p.id, accused: lost.id, members: this.members.map((q) => q.id), now: this.ctx.now() });
      this.ctx.feed.emit('debug', 'stale loss report recorded', { peer: p.id, lost: m.peer, epoch: m.epoch, current: this.epoch });
      return;
    }
    const lastSeen = this.ctx.lastSeen;
    if (!lastSeen) return this.ctx.drop(lost, `reported lost by ${p.id}: ${m.message}`);
    const v = this.evidence.judge({ accuser: p.id, accused: lost.id, members: this.members.map((q) => q.id), now: this.ctx.now(), lastSeen });
    this.ctx.feed.emit('warn', 'loss report weighed', {
      group: this.id, epoch: this.epoch, accuser: p.id, accused: lost.id, report: m.message, decision: v.kind === 'drop' ? `drop ${v.peer}` : 're-form', why: v.why,
    });
    if (v.kind === 'drop') {
      this.judged.add(v.peer);
      return this.ctx.drop(v.peer === p.id ? p : lost, `${v.why} (${p.id} reported ${lost.id} lost: ${m.message})`);
    }
    this.members = v.order.map((id) => this.members.find((q) => q.id === id)!);
    this.reform([], `${p.id} reported ${lost.id} lost; both are alive: ${v.why}`);
  }

  /** Takes a dropped peer out; the survivors re-form at once (or the pending peers form the group). */
  remove(p: Peer, reason: string, quiet: boolean): void {
    if (!p.member) {
      this.pending = this.pending.filter((q) => q !== p);
      this.ctx.feed.emit('info', 'pending peer left', { peer: p.id, group: this.id, reason });
      this.ctx.worldChanged();
      return;
    }
    this.members = this.members.filter((q) => q !== p);
    if (!this.judged.delete(p.id)) this.evidence.vindicate(p.id); // gone for a reason of its own: its accusers were right
    this.votes.delete(p.id);
    this.sync.forget(p.id);
    this.topology.forget(p.id);
    this.voteReplies = this.voteReplies.filter((v) => v.peer !== p);
    this.ctx.feed.emit(quiet ? 'info' : 'warn', quiet ? 'peer left' : 'peer dropped', {
      peer: p.id, group: this.id, reason, epoch: this.epoch, survivors: this.members.length,
    });
    if (this.members.length > 0) {
      this.reform([], `${p.id} ${quiet ? 'left' : `dropped: ${reason}`}`);
    } else if (this.pending.length > 0) {
      const accept = this.pending;
      this.pending = [];
      this.reform(accept, `no members left; accepting pending ${accept.map((q) => q.id).join(', ')}`);
    } else {
      this.installing = undefined;
      this.voteDeadline = undefined;
      this.sync.reset();
      this.admission.reset();
      this.ctx.feed.emit('info', 'group is empty', { group: this.id });
      this.ctx.worldChanged();
    }
  }

  /** Acts on whatever timed out by `now`. */
  tick(now: number): void {
    const r = this.installing;
    if (r && now >= r.deadline) {
      const late = this.members.filter((q) => r.waiting.has(q.id));
      // A member whose heartbeats say its JavaScript thread is busy installs the ring once it is free: the rest of
      // the group waits for it, but for at most voteTimeoutMs (not jsHangTimeoutMs, minutes: a member that keeps
      // saying "busy" must not hold every re-form that long; docs/master.md, "Liveness").
      const patient = now - r.started < this.ctx.voteTimeoutMs;
      const busy = patient ? late.filter((q) => q.busy && now - q.busy.seen < this.ctx.ackTimeoutMs) : [];
      for (const q of late) {
        if (busy.includes(q)) continue;
        this.ctx.drop(q, q.busy && !patient
          ? `did not install epoch ${r.epoch} within ${this.ctx.voteTimeoutMs} ms (voteTimeoutMs): its JavaScript thread stayed busy`
          : `did not install epoch ${r.epoch} within ${this.ctx.ackTimeoutMs} ms`);
      }
      if (busy.length > 0 && this.installing === r) r.deadline = Math.min(r.started + this.ctx.voteTimeoutMs, ...busy.map((q) => q.busy!.seen + this.ctx.ackTimeoutMs));
    }
    if (this.voteDeadline !== undefined && now >= this.voteDeadline) this.voteTimedOut();
    this.sync.tick(now);
    this.topology.tick(now);
  }

  /** Re-forms the group with the same members in a new ring order (optimizeTopology). */
  reorder(order: Peer[], reason: string): void {
    this.members = order;
    this.reform([], reason);
  }

  private checkVote(): void {
    if (this.installing || this.members.length === 0 || this.votes.size === 0) return;
    if (!this.members.every((q) => this.votes.has(q.id))) return;
    this.voteDeadline = undefined;
    const voters = this.members.map((q) => ({ peer: q, ids: this.votes.get(q.id)! }));
    this.votes.clear();
    this.admission.reset();
    const accept = this.pending.filter((q) => !q.dropped);
    this.pending = [];
    this.ctx.feed.count('votesPassed');
    const ms = this.ctx.now() - this.voteStarted;
    if (accept.length === 0) {
      this.ctx.feed.emit('debug', 'vote passed (a barrier: nobody pending)', { group: this.id, ms });
      for (const v of voters) for (const id of v.ids) this.ctx.send(v.peer, { t: 'voteResult', id, ok: true, epoch: this.epoch, accepted: 0 });
      return;
    }
    for (const v of voters) this.voteReplies.push({ ...v, accepted: accept.length });
    const ids = accept.map((q) => q.id).join(',');
    this.ctx.feed.emit('info', 'vote passed: accepting pending peers', { group: this.id, accepted: ids, ms });
    this.reform(accept, `accepted ${accept.map((q) => q.id).join(', ')}`);
  }

  private voteTimedOut(): void {
    this.voteDeadline = undefined;
    // The round is over without a result: the next commit announces a new one (a member whose operations come
    // further apart than the vote timeout must not end automatic admission for good).
    this.admission.reset();
    if (this.votes.size === 0) return;
    const missing = this.members.filter((q) => !this.votes.has(q.id)).map((q) => q.id);
    const message = `updateTopology timed out after ${this.ctx.voteTimeoutMs} ms: ${missing.join(', ')} did not vote`;
    this.ctx.feed.count('votesTimedOut');
    this.ctx.feed.emit('warn', 'vote timed out', { group: this.id, missing: missing.join(',') });
    for (const q of this.members) {
      for (const id of this.votes.get(q.id) ?? []) {
        this.ctx.send(q, { t: 'voteResult', id, ok: false, epoch: this.epoch, accepted: 0, code: 'TIMEOUT', message });
      }
    }
    this.votes.clear();
  }

  private checkOp(key: string): void {
    const set = this.ops.get(key);
    if (!set || this.installing || !this.members.every((q) => set.has(q.id))) return;
    this.ops.delete(key);
    const admit = this.admission.announce(this.members, this.pending);
    rememberBounded(this.committed, key, admit, MAX_REMEMBERED_OPS);
    this.ctx.feed.count('opsCommitted');
    if (admit) this.ctx.feed.emit('info', 'admission announced: members vote pending peers in after this operation', { group: this.id, op: key, pending: this.pending.length });
    for (const q of this.members) this.ctx.send(q, { t: 'opCommit', epoch: this.epoch, key, ...(admit ? { admit } : {}) });
  }

  private sendRing(to: Peer, reason: string): void {
    const peers = this.members.map((q) => ({ id: nativePeerId(q), host: q.host, port: q.port }));
    // Announced only when every member has one: the data plane proves all of a ring's links, or none.
    const keys = this.members.every((q) => q.identity) ? this.members.map((q) => q.identity!) : undefined;
    this.ctx.send(to, { t: 'ring', epoch: this.epoch, index: this.members.indexOf(to), peers, ticket: this.ticket, reason, ...(keys && { keys }) });
  }

  /**
   * Installs a new epoch: new members, new ticket. The `ring` of the new epoch is what tells every member that
   * its operations of older epochs are over: installing it fails them at once (data plane and commit wait), so
   * no operation waits out a deadline for a peer that is gone.
   */
  private reform(accept: Peer[], reason: string): void {
    this.epoch += 1;
    // Pending peers got in (a vote, or the last member left and they form the group): whoever waits after this is
    // a new round. A re-form that only loses a member keeps the round: the survivors still owe their vote.
    if (accept.length > 0) this.admission.reset();
    for (const q of accept) q.member = true;
    this.members.push(...accept);
    this.ticket = this.ctx.random(16);
    const superseded = this.ops.size;
    this.ops.clear();
    this.committed.clear();
    this.aborted.clear();
    this.ctx.feed.count('reforms');
    this.ctx.feed.count('peersAccepted', accept.length);
    this.ctx.feed.count('opsSuperseded', superseded);
    this.ctx.feed.emit('info', 'group re-formed', {
      group: this.id, epoch: this.epoch, members: this.members.map((q) => q.id).join(','), reason, abortedOps: superseded || undefined,
    });
    for (const q of this.members) this.sendRing(q, reason);
    this.sync.onReform(reason);
    this.topology.onReform();
    this.installing = { epoch: this.epoch, waiting: new Set(this.members.map((q) => q.id)), deadline: this.ctx.now() + this.ctx.ackTimeoutMs, started: this.ctx.now() };
    this.ctx.worldChanged();
  }

  private epochReady(): void {
    this.installing = undefined;
    this.ctx.feed.emit('debug', 'epoch ready', { group: this.id, epoch: this.epoch });
    for (const q of this.members) this.ctx.send(q, { t: 'ready', epoch: this.epoch });
    this.sync.onEpochReady();
    const replies = this.voteReplies;
    this.voteReplies = [];
    for (const v of replies) {
      if (v.peer.dropped) continue;
      for (const id of v.ids) this.ctx.send(v.peer, { t: 'voteResult', id, ok: true, epoch: this.epoch, accepted: v.accepted });
    }
    // Reports that arrived while the ring was being installed count now.
    for (const key of [...this.ops.keys()]) this.checkOp(key);
    this.checkVote();
  }
}
