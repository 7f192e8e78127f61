/**
 * The peer's half of `syncSharedState`: report this peer's state digest to the master, execute the master's
 * decision over the data plane (lib/shared-state/transfer.ts), report the outcome, and wait for the commit. A
 * member lost during a transfer does not fail the sync: the master asks for fresh reports (`stateRetry`) and
 * decides again, and this peer runs the new decision.
 */
import { AbortError, PeerLostError, StateError, TcclError, TimeoutError, errorFromCode } from '../errors';
import { MAX_RESUME_KEYS, Msg, ResumeState, stateLayout } from '../protocol';
import { SYNC_STRATEGIES, SyncStrategy } from '../shared-state/election';
import { hashState } from '../shared-state/hash';
import type { SharedState } from '../shared-state/state';
import { SyncResult, executeSyncPlan } from '../shared-state/transfer';
import { checkInt } from '../validate';
import type { PeerContext } from './context';
import type { Membership } from './membership';

/** Options of {@link Communicator.syncSharedState}. */
export interface SyncSharedStateOptions {
  /**
   * 'enforcePopular' (default): the state held by most peers wins and this peer offers its own.
   * 'sendOnly': this peer declares it holds the right state (sendOnly peers must agree with each other).
   * 'receiveOnly': this peer takes the group's state and offers none (e.g. a newcomer with an empty state).
   */
  strategy?: SyncStrategy;
  /** Give up after this long in total, ms (default 0: no limit besides the master's vote deadline). */
  timeoutMs?: number;
  /** No-progress limit of each data-plane round, ms (default 30000). */
  progressTimeoutMs?: number;
  signal?: AbortSignal;
}

/** What {@link Communicator.syncSharedState} did on this peer. */
export interface SyncSharedStateResult extends SyncResult {
  /** The master's sync number in this group. */
  sync: number;
  /** Elections it took (more than 1 when a peer was lost during a transfer). */
  attempts: number;
  /** The group epoch of the decision that completed. */
  epoch: number;
}

type StateMsg = Msg<'stateDecision' | 'stateRetry' | 'stateCommit' | 'stateFail'>;

export interface SyncHost extends PeerContext {
  readonly membership: Membership;
  /** This peer's id at the master. */
  id(): string;
}

/** The messages of one sync in progress, and a way to wait for the next. */
interface Inbox {
  messages: StateMsg[];
  wake?: () => void;
  /** Syncs up to this number are over for this peer: their late messages are stale. */
  minSync: number;
  /** The master's number for this sync, once known. */
  sync?: number;
  /** The attempt this peer is at. */
  attempt: number;
  /** The layout of the state being synced (of the last decision). */
  layout?: string;
}

/** A restart of the sync with fresh reports (the master's `stateRetry`). */
class Restart {
  constructor(readonly attempt: number, readonly reason: string) {}
}

export class SyncClient {
  private inbox?: Inbox;
  /** Highest sync number this peer took part in. */
  private lastSync = 0;
  /** The last sync this peer saw committed, and the revision of each state layout it committed last. */
  private committed = { sync: 0, revision: 0 };
  private readonly states = new Map<string, number>();

  constructor(private readonly host: SyncHost) {}

  /** Routes a shared-state message of the master to the sync in progress (stale ones are dropped). */
  onMessage(m: StateMsg): void {
    const run = this.inbox;
    if (!run || (m.sync <= run.minSync && !(m.t === 'stateFail' && m.sync === 0))) return;
    if (run.sync === undefined && m.sync !== 0) run.sync = m.sync;
    if (m.sync !== 0 && m.sync !== run.sync) return;
    run.messages.push(m);
    run.wake?.();
  }

  /**
   * What this peer tells a master that does not know its session: the syncs it saw, the one it is in, and each
   * state's last committed revision (lib/protocol/resume.ts).
   */
  report(): { lastSync: number; committedSync: number; committedRevision: number; sync?: { id: number; attempt: number }; states: ResumeState[] } {
    const run = this.inbox;
    return {
      lastSync: Math.max(this.lastSync, run?.sync ?? 0),
      committedSync: this.committed.sync,
      committedRevision: this.committed.revision,
      sync: run ? { id: run.sync ?? 0, attempt: run.attempt } : undefined,
      states: [...this.states].map(([layout, revision]) => ({ layout, revision })),
    };
  }

  /** Wakes a sync waiting for the master (the communicator failed). */
  interrupt(): void {
    this.inbox?.wake?.();
  }

  async sync(state: SharedState, options: SyncSharedStateOptions): Promise<SyncSharedStateResult> {
    if (typeof options !== 'object' || options === null) throw new TypeError('Expected syncSharedState options to be an object');
    const strategy = options.strategy ?? 'enforcePopular';
    if (!SYNC_STRATEGIES.includes(strategy)) {
      throw new TypeError(`Expected "strategy" to be one of ${SYNC_STRATEGIES.join(', ')}, got ${JSON.stringify(strategy)}`);
    }
    const timeoutMs = checkInt('timeoutMs', options.timeoutMs ?? 0, 0, 2 ** 31 - 1);
    const progressTimeoutMs = checkInt('progressTimeoutMs', options.progressTimeoutMs ?? 30_000, 0, 2 ** 31 - 1);
    if (this.inbox) throw new Error('Another syncSharedState is in progress on this communicator: one at a time');
    const signal = options.signal;
    if (signal?.aborted) throw new AbortError('syncSharedState aborted before it started', { cause: signal.reason });
    // One controller for the caller's signal and the deadline; the transfer rounds listen to it.
    const ac = new AbortController();
    let timedOut = false;
    const onAbort = () => ac.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    const timer = timeoutMs > 0 ? setTimeout(() => { timedOut = true; ac.abort(new Error('timeout')); }, timeoutMs) : undefined;
    const inbox: Inbox = { messages: [], minSync: this.lastSync, attempt: 0 };
    this.inbox = inbox;
    const stopped = (): Error | undefined => {
      const failure = this.host.failure();
      if (failure) return failure;
      if (!ac.signal.aborted) return undefined;
      return timedOut
        ? new TimeoutError(`syncSharedState did not complete within ${timeoutMs} ms; this peer's state is unchanged unless the sync had committed`)
        : new AbortError('syncSharedState aborted by AbortSignal', { cause: signal?.reason });
    };
    try {
      const r = await new SyncRun(this.host, inbox, state, strategy, progressTimeoutMs, ac.signal, stopped).run();
      this.committed = { sync: r.sync, revision: r.revision };
      if (inbox.layout) {
        this.states.delete(inbox.layout);
        this.states.set(inbox.layout, r.revision);
        if (this.states.size > MAX_RESUME_KEYS) this.states.delete(this.states.keys().next().value as string);
      }
      const stats = this.host.stats;
      stats.syncs++;
      stats.stateRevision = r.revision;
      stats.bytesSent += r.bytesSent;
      stats.bytesReceived += r.bytesReceived;
      if (r.bytesReceived > 0) {
        stats.stateTransfers++;
        stats.stateBytesReceived += r.bytesReceived;
      }
      return r;
    } finally {
      if (timer) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      if (inbox.sync !== undefined) this.lastSync = Math.max(this.lastSync, inbox.sync);
      if (this.inbox === inbox) this.inbox = undefined;
    }
  }
}

/** One call of syncSharedState on this peer: attempts until the master commits or the sync fails. */
class SyncRun {
  private attempt = 0;
  private attempts = 0;
  private epoch = 0;
  private role: SyncResult['role'] = 'upToDate';
  private readonly total = { bytesSent: 0, bytesReceived: 0, rounds: 0, retried: [] as string[], unresolved: [] as string[], changed: new Set<string>() };
  private readonly timings = { transferMs: 0, verifyMs: 0, commitMs: 0 };

  constructor(
    private readonly host: SyncHost,
    private readonly inbox: Inbox,
    private readonly state: SharedState,
    private readonly strategy: SyncStrategy,
    private readonly progressTimeoutMs: number,
    private readonly signal: AbortSignal,
    private readonly stopped: () => Error | undefined,
  ) {}

  async run(): Promise<SyncSharedStateResult> {
    try {
      await this.host.membership.waitReady(this.host.membership.epoch, Infinity, 'waiting for the group to form', this.signal);
    } catch (err) {
      throw this.stopped() ?? err;
    }
    for (;;) {
      const outcome = await this.attemptOnce();
      if (!(outcome instanceof Restart)) return outcome;
      this.host.log().info('shared-state sync restarts', { attempt: outcome.attempt, reason: outcome.reason });
      this.attempt = outcome.attempt;
      this.inbox.attempt = outcome.attempt;
    }
  }

  /** Report, receive the decision, execute it, wait for the commit; or learn that the master restarts the sync. */
  private async attemptOnce(): Promise<SyncSharedStateResult | Restart> {
    let digest;
    try {
      digest = await hashState(this.state);
    } catch (err) {
      throw this.giveUp(err as Error);
    }
    const stop = this.stopped();
    if (stop) throw this.giveUp(stop);
    this.host.send({ t: 'stateReport', attempt: this.attempt, strategy: this.strategy, revision: digest.revision, entries: digest.entries });
    const dm = await this.until((m) => m.t === 'stateDecision' && m.attempt === this.attempt);
    if (dm instanceof Restart) return dm;
    const result = await this.execute(dm as Msg<'stateDecision'>);
    const end = await this.until((m) => m.t === 'stateCommit' && result !== undefined);
    if (end instanceof Restart) return end;
    return {
      ...result!,
      revision: this.state.revision,
      role: this.role,
      changedKeys: [...this.total.changed].sort(),
      bytesSent: this.total.bytesSent,
      bytesReceived: this.total.bytesReceived,
      rounds: this.total.rounds,
      retried: this.total.retried,
      unresolved: this.total.unresolved,
      timings: this.timings,
      sync: end.sync,
      attempts: this.attempts,
      epoch: this.epoch,
    };
  }

  /** Runs this peer's part of a decision; undefined when a lost peer interrupted it (the master re-decides). */
  private async execute(dm: Msg<'stateDecision'>): Promise<SyncResult | undefined> {
    const { membership } = this.host;
    const decision = dm.decision;
    this.inbox.layout = stateLayout(decision.entries);
    this.attempts++;
    const mine = decision.failures[this.host.id()];
    if (mine) throw new StateError(mine.code, mine.message); // the master knows: it decided it
    let result: SyncResult;
    try {
      await membership.waitReady(dm.epoch, Infinity, 'waiting for the group to form', this.signal);
      if (membership.epoch !== dm.epoch) throw membership.superseded(dm.epoch, 'Shared-state transfer');
      this.epoch = dm.epoch;
      result = await executeSyncPlan(this.host.dataPlane, { self: this.host.id(), members: membership.members }, decision, this.state, {
        tag: dm.tag, timeoutMs: this.progressTimeoutMs, signal: this.signal,
      });
    } catch (err) {
      const stop = this.stopped();
      if (stop) throw this.giveUp(stop);
      const e = err as TcclError & { peer?: string };
      if (!(e instanceof TcclError && e.retryable) && membership.epoch === dm.epoch) throw this.giveUp(e);
      // A peer was lost during the transfer: nothing was written here; the master re-decides after the re-form.
      if (e instanceof PeerLostError && e.peer && membership.epoch === dm.epoch) {
        this.host.log().warn('lost a peer during a shared-state sync; reporting it', { lost: e.peer, err: e });
        this.host.send({ t: 'lost', epoch: dm.epoch, peer: String(e.peer).slice(0, 300), message: e.message.slice(0, 4000) });
      }
      return undefined;
    }
    this.total.bytesSent += result.bytesSent;
    this.total.bytesReceived += result.bytesReceived;
    this.total.rounds += result.rounds;
    this.total.retried.push(...result.retried);
    this.total.unresolved.push(...result.unresolved);
    for (const k of result.changedKeys) this.total.changed.add(k);
    this.timings.transferMs += result.timings.transferMs;
    this.timings.verifyMs += result.timings.verifyMs;
    this.timings.commitMs += result.timings.commitMs;
    if (result.role === 'receiver' || this.role !== 'receiver') this.role = result.role;
    this.host.send({ t: 'stateDone', sync: this.inbox.sync, attempt: this.attempt, ok: true });
    return result;
  }

  /**
   * The master's next message of this sync that `wanted` accepts; a `stateRetry` of a later attempt restarts the
   * sync, a `stateFail` ends it for everyone, anything else is skipped.
   */
  private async until<M extends StateMsg>(wanted: (m: StateMsg) => boolean): Promise<M | Restart> {
    for (;;) {
      let m: StateMsg;
      try {
        m = await this.next();
      } catch (err) {
        throw this.giveUp(err as Error);
      }
      if (m.t === 'stateFail') throw errorFromCode(m.code, m.message);
      if (m.t === 'stateRetry' && m.attempt > this.attempt) return new Restart(m.attempt, m.reason);
      if (wanted(m)) return m as M;
    }
  }

  private async next(): Promise<StateMsg> {
    for (;;) {
      // What the master said comes first: a decision that fails this peer explains a `dropped` right after it.
      const m = this.inbox.messages.shift();
      if (m) return m;
      const stop = this.stopped();
      if (stop) throw stop;
      await new Promise<void>((resolve) => {
        this.inbox.wake = resolve;
        this.signal.addEventListener('abort', () => resolve(), { once: true });
        if (this.host.failure()) resolve();
      });
      this.inbox.wake = undefined;
    }
  }

  /** Tells the master this peer gives the sync up, and returns `err` to throw. */
  private giveUp(err: Error): Error {
    const e = err as TcclError;
    this.host.send({
      t: 'stateDone', sync: this.inbox.sync, attempt: this.attempt, ok: false,
      code: (typeof e.code === 'string' ? e.code : 'INTERNAL').slice(0, 32), message: String(e.message).slice(0, 4000),
    });
    return err;
  }
}
