/**
 * The master's half of `syncSharedState` for one group, as a state machine: collect a report from every member
 * (a vote with a deadline), elect (lib/shared-state/election.ts), send every member the same decision, and
 * commit once every member is done. A member lost while the decision is executed interrupts it: when the group
 * is ready again the survivors report afresh (what they hold now) and the master elects again.
 */
import type { DType } from '../dtype';
import { ProtocolError } from '../errors';
import { Msg, stateLayout } from '../protocol';
import { PeerStateReport, SyncDecision, electSharedState, validateStateReport } from '../shared-state/election';
import { GroupContext, Peer, rememberBounded } from './context';

/**
 * Shared-state syncs use exchange tags from here on, a fresh range of STATE_TAG_SPAN per attempt, far above any
 * tag a user picks for an all-reduce.
 */
export const STATE_TAG_BASE = 2 ** 52;
const STATE_TAG_SPAN = 8;
/** State layouts whose last sync a group remembers (for the revision rule). */
const MAX_REMEMBERED_STATES = 64;

/** What the sync needs to know of its group. */
export interface SyncHost {
  readonly id: number;
  readonly epoch: number;
  readonly members: readonly Peer[];
  /** A new ring is being installed (decisions wait until it is ready). */
  readonly reforming: boolean;
}

interface Round {
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
  /** While collecting: when the sync fails for everyone. */
  deadline?: number;
}

/** A state's layout identity: a hash of its sorted keys (peers report it when they resume at a new master). */
const layoutOf = stateLayout;

export class StateSync {
  private round?: Round;
  /** Reports for the next sync from peers that already finished the current one (they failed it). */
  private readonly nextReports = new Map<string, PeerStateReport>();
  private seq = 0;
  /** Tag ranges handed out to sync attempts so far. */
  private tags = 0;
  /**
   * The group's last successful sync per state layout (its sorted keys): the revision rule of the next election
   * of that state. Keyed by layout so that one group can sync several distinct states (e.g. two optimizers).
   */
  private readonly lastSyncs = new Map<string, { revision: number; peers: string[] }>();

  constructor(private readonly group: SyncHost, private readonly ctx: GroupContext) {}

  /** When the sync in progress fails for lack of reports, if it is collecting. */
  get deadline(): number | undefined {
    return this.round?.deadline;
  }

  /** A peer's report (attempt 0: it called syncSharedState; attempt n: it answers stateRetry n). */
  onReport(p: Peer, m: Msg<'stateReport'>): void {
    if (!p.member) {
      this.ctx.send(p, { t: 'stateFail', sync: 0, code: 'NOT_MEMBER', message: 'this peer has not been accepted into its group yet' });
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
    let round = this.round;
    if (round && m.attempt === 0 && round.failed.has(p.id)) {
      // It already finished the current sync (with an error) and starts the next one: keep it for later.
      this.nextReports.set(p.id, report);
      return;
    }
    if (!round) {
      if (m.attempt !== 0) return; // an answer to a retry of a sync that is over
      round = this.open();
    }
    if (m.attempt < round.attempt && round.phase === 'collect' && !round.reports.has(p.id) && !round.failed.has(p.id)) {
      // A member that starts the sync late, after the master restarted it (a master rebuilt from the peers' reports
      // reopens a sync at a higher attempt): bring it to the current attempt.
      this.ctx.send(p, { t: 'stateRetry', sync: round.id, attempt: round.attempt, reason: 'the sync was restarted by the master' });
      return;
    }
    if (m.attempt !== round.attempt || round.phase !== 'collect' || round.failed.has(p.id)) {
      this.ctx.feed.emit('debug', 'stale shared-state report ignored', { peer: p.id, attempt: m.attempt, current: round.attempt, phase: round.phase });
      return;
    }
    round.reports.set(p.id, report);
    this.ctx.feed.emit('debug', 'shared-state report', {
      peer: p.id, group: this.group.id, sync: round.id, revision: m.revision, strategy: m.strategy, reports: round.reports.size, members: this.group.members.length,
    });
    this.checkCollect();
  }

  /** A peer finished the current attempt (ok) or gave up on the sync (not ok). */
  onDone(p: Peer, m: Msg<'stateDone'>): void {
    const round = this.round;
    if (!round || (m.sync !== undefined && m.sync !== round.id) || round.failed.has(p.id)) return;
    if (!m.ok) {
      // This peer gives up on the sync (its own error, a timeout, an abort): the others go on without it.
      round.failed.set(p.id, m.code ?? 'INTERNAL');
      round.reports.delete(p.id);
      this.ctx.feed.emit('info', 'a peer failed the shared-state sync', { peer: p.id, group: this.group.id, sync: round.id, code: m.code, why: m.message });
      if (round.phase === 'collect') this.checkCollect();
      else this.checkDone();
      return;
    }
    if (m.attempt !== round.attempt || round.phase !== 'execute') return;
    round.done.add(p.id);
    this.checkDone();
  }

  /** The group is re-forming: a decision being executed in the old epoch fails; it is re-decided when ready. */
  onReform(reason: string): void {
    const round = this.round;
    if (round?.phase !== 'execute') return;
    round.phase = 'retry';
    this.ctx.feed.emit('info', 'shared-state sync interrupted; it restarts when the group is ready', {
      group: this.group.id, sync: round.id, attempt: round.attempt, reason,
    });
  }

  /** A new epoch is ready: re-check a collecting sync, confirm an executing one, restart an interrupted one. */
  onEpochReady(): void {
    const round = this.round;
    if (!round) return;
    if (round.phase === 'collect') return this.checkCollect();
    if (round.phase === 'execute') return this.checkDone();
    round.attempt += 1;
    round.phase = 'collect';
    round.reports.clear();
    round.done.clear();
    round.decision = undefined;
    round.deadline = this.ctx.now() + this.ctx.voteTimeoutMs;
    this.ctx.feed.count('syncRetries');
    const reason = `group ${this.group.id} re-formed (epoch ${this.group.epoch}) during the transfer`;
    for (const q of this.participants(round)) this.ctx.send(q, { t: 'stateRetry', sync: round.id, attempt: round.attempt, reason });
  }

  /** A member left the group. */
  forget(peerId: string): void {
    this.nextReports.delete(peerId);
    this.round?.reports.delete(peerId);
    this.round?.failed.delete(peerId);
    this.round?.done.delete(peerId);
  }

  /**
   * A master rebuilt from the peers' reports (lib/master/resume.ts) takes over what they knew: sync numbers go on
   * above every one they saw, the revision rule keeps each state's last committed revision, and a sync that was
   * in progress is restarted (fresh reports, attempt above every one used) once the rebuilt epoch is ready.
   */
  restore(r: { seq: number; states: Map<string, { revision: number; peers: string[] }>; inProgress?: { id: number; attempt: number } }): void {
    this.seq = Math.max(this.seq, r.seq);
    for (const [layout, last] of r.states) rememberBounded(this.lastSyncs, layout, last, MAX_REMEMBERED_STATES);
    if (!r.inProgress) return;
    this.round = {
      id: r.inProgress.id, attempt: r.inProgress.attempt, phase: 'retry', reports: new Map(), failed: new Map(), done: new Set(), epoch: this.group.epoch,
    };
  }

  /** The revision of the last committed sync of a state layout, if the group synced it. */
  lastRevision(layout: string): number | undefined {
    return this.lastSyncs.get(layout)?.revision;
  }

  /** The group is gone. */
  reset(): void {
    this.round = undefined;
    this.nextReports.clear();
  }

  tick(now: number): void {
    const round = this.round;
    if (!round || round.phase !== 'collect' || round.deadline === undefined || now < round.deadline) return;
    const missing = this.participants(round).filter((q) => !round.reports.has(q.id)).map((q) => q.id);
    const message = `syncSharedState timed out after ${this.ctx.voteTimeoutMs} ms: ${missing.join(', ') || 'nobody'} did not call it (every member of the group must)`;
    this.ctx.feed.emit('warn', 'shared-state sync timed out', { group: this.group.id, sync: round.id, missing: missing.join(',') });
    this.ctx.feed.count('syncsFailed');
    for (const q of this.participants(round)) this.ctx.send(q, { t: 'stateFail', sync: round.id, code: 'TIMEOUT', message });
    this.finish();
  }

  private open(): Round {
    const round: Round = {
      id: ++this.seq, attempt: 0, phase: 'collect', reports: new Map(), failed: new Map(), done: new Set(), epoch: this.group.epoch,
      deadline: this.ctx.now() + this.ctx.voteTimeoutMs,
    };
    this.round = round;
    return round;
  }

  /** Members that still take part in the sync (those that failed it are out). */
  private participants(round: Round): Peer[] {
    return this.group.members.filter((q) => !round.failed.has(q.id));
  }

  private checkCollect(): void {
    const round = this.round;
    if (!round || round.phase !== 'collect' || this.group.reforming) return;
    const parts = this.participants(round);
    if (parts.length === 0) return this.finish();
    if (!parts.every((q) => round.reports.has(q.id))) return;
    const reports = parts.map((q) => round.reports.get(q.id)!);
    // The previous sync of this state: the layout most reports share that the group synced before.
    const layouts = new Map<string, number>();
    for (const r of reports) {
      const l = layoutOf(r.entries);
      if (this.lastSyncs.has(l)) layouts.set(l, (layouts.get(l) ?? 0) + 1);
    }
    const layout = [...layouts].sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : 1))[0]?.[0];
    const decision = electSharedState(reports, { previous: layout === undefined ? undefined : this.lastSyncs.get(layout) });
    for (const [peer, f] of Object.entries(decision.failures)) round.failed.set(peer, f.code);
    const tag = STATE_TAG_BASE + (this.tags++ % 2 ** 40) * STATE_TAG_SPAN;
    const send = (q: Peer) => this.ctx.send(q, { t: 'stateDecision', sync: round.id, attempt: round.attempt, epoch: this.group.epoch, tag, decision });
    // sendOnly peers in conflict leave the group first (told why), so the decision runs in the epoch without them.
    const dropped = decision.drop.map((id) => this.group.members.find((q) => q.id === id)).filter((q): q is Peer => q !== undefined);
    for (const q of dropped) send(q);
    for (const q of dropped) this.ctx.drop(q, decision.failures[q.id]?.message ?? 'sendOnly conflict');
    if (this.round !== round) return; // the group emptied
    round.phase = 'execute';
    round.decision = decision;
    round.epoch = this.group.epoch;
    round.deadline = undefined;
    const notable = decision.transfers.length > 0 || Object.keys(decision.failures).length > 0 || round.attempt > 0;
    this.ctx.feed.emit(notable ? 'info' : 'debug', 'shared-state elected', {
      group: this.group.id, sync: round.id, attempt: round.attempt || undefined, revision: decision.revision,
      sources: decision.sources.join(',') || undefined, outdated: Object.keys(decision.outdated).join(',') || undefined,
      failed: Object.keys(decision.failures).join(',') || undefined, transfers: decision.transfers.length,
    });
    for (const q of this.group.members) if (reports.some((r) => r.peerId === q.id)) send(q);
    this.checkDone();
  }

  private checkDone(): void {
    const round = this.round;
    if (!round || round.phase !== 'execute' || this.group.reforming || this.group.epoch !== round.epoch) return;
    const parts = this.participants(round);
    if (!parts.every((q) => round.done.has(q.id))) return;
    const decision = round.decision!;
    if (round.done.size > 0) {
      rememberBounded(this.lastSyncs, layoutOf(decision.entries), { revision: decision.revision, peers: [...round.done].sort() }, MAX_REMEMBERED_STATES);
      for (const q of parts) this.ctx.send(q, { t: 'stateCommit', sync: round.id, revision: decision.revision });
      this.ctx.feed.count('syncsCommitted');
      const notable = decision.transfers.length > 0 || round.attempt > 0;
      this.ctx.feed.emit(notable ? 'info' : 'debug', 'shared state synced', {
        group: this.group.id, sync: round.id, revision: decision.revision, peers: round.done.size, attempts: round.attempt + 1,
      });
    }
    this.finish();
  }

  private finish(): void {
    this.round = undefined;
    if (this.nextReports.size === 0) return;
    const next = this.open();
    for (const [id, r] of this.nextReports) if (this.group.members.some((q) => q.id === id)) next.reports.set(id, r);
    this.nextReports.clear();
    this.checkCollect();
  }
}
