/**
 * The committed operation, one home for every collective through the master: the data plane computes into
 * memory of the operation's own, the master confirms (`opCommit`) once every member finished the same operation,
 * and only then does `publish` touch the caller's buffers; a failure anywhere leaves them as they were. A failed
 * operation is reported to the master (`lost` / `fail`), an `opAbort` ends the running data-plane part at once,
 * and `withRetries` runs an operation again once the group has re-formed, with the survivors.
 *
 * A collective supplies only its data-plane step and its publish step (see docs/architecture.md, "Add a
 * collective"); keys (`tag.seq`), epochs, commits, aborts and retries are all here.
 */
import { AbortError, PeerLostError, TcclError, TooFewPeersError, errorFromCode } from '../errors';
import { MAX_RESUME_KEYS, Msg } from '../protocol';
import type { PeerContext } from './context';
import type { Membership } from './membership';
import { monotonicMs } from '../clock';

export interface CommittedHost extends PeerContext {
  readonly membership: Membership;
  /** How long a re-form may take before a retry gives up waiting for it (twice the peer timeout). */
  reformWaitMs(): number;
}

/** What one operation's data-plane step learns of its run. */
export interface OpRun {
  tag: number;
  /** The epoch the operation runs in; its ring is `membership.ring`. */
  epoch: number;
  /** `tag.seq`: the operation's name between the peers and the master. */
  key: string;
}

/** One collective, as the committed operation runs it. */
export interface CommittedSpec<C, R> {
  /** For messages: 'All-reduce', 'Broadcast', ... */
  what: string;
  tag: number;
  /** Deadline for the group to be ready, ms (0 = none). */
  timeoutMs: number;
  signal?: AbortSignal;
  /** Checks that need the epoch's group (e.g. a broadcast root still present); throws to fail without running. */
  check?(run: OpRun): void;
  /** The data-plane step: must write only memory of its own (never the caller's buffers). */
  compute(run: OpRun): Promise<C>;
  /** After the commit: makes the result visible to the caller (copies into the caller's buffers). */
  publish(computed: C, run: OpRun): Promise<R>;
}

interface OpWaiter {
  epoch: number;
  resolve: () => void;
  reject: (e: Error) => void;
}

export class CommittedOps {
  /** Per tag: operations started with it in the current epoch (the key's sequence number). */
  private tagUses = new Map<number, number>();
  private readonly waiters = new Map<string, OpWaiter>();
  /** Aborts the master announced before this peer finished the operation. */
  private earlyAborts = new Map<string, { code: string; message: string }>();
  /** In-flight data-plane operations by key: the tag to abort when the master aborts the key. */
  private readonly running = new Map<string, number>();
  /** Operations of the current epoch whose commit arrived (the newest ones), for a master rebuilt after a restart. */
  private committed: string[] = [];

  constructor(private readonly host: CommittedHost) {
    host.membership.onNewEpoch((epoch, old) => {
      this.tagUses = new Map();
      this.committed = [];
      this.earlyAborts = new Map();
      for (const [key, w] of [...this.waiters]) {
        if (w.epoch < epoch) {
          this.waiters.delete(key);
          w.reject(host.membership.superseded(old));
        }
      }
    });
  }

  /** Handles `opCommit` and `opAbort`. */
  onMessage(m: Msg<'opCommit' | 'opAbort'>): void {
    const membership = this.host.membership;
    if (m.t === 'opCommit') {
      const w = this.waiters.get(m.key);
      if (m.epoch === membership.epoch) {
        this.committed.push(m.key);
        if (this.committed.length > MAX_RESUME_KEYS) this.committed.shift();
      }
      if (w && w.epoch === m.epoch) {
        this.waiters.delete(m.key);
        w.resolve();
      }
      return;
    }
    if (m.epoch !== membership.epoch) return;
    const w = this.waiters.get(m.key);
    if (w && w.epoch === m.epoch) {
      this.waiters.delete(m.key);
      w.reject(errorFromCode(m.code, m.message));
      return;
    }
    this.earlyAborts.set(m.key, { code: m.code, message: m.message });
    // The data-plane part may still wait for a peer that has given the operation up: end it now rather than at
    // its deadline.
    const tag = this.running.get(m.key);
    if (tag !== undefined) this.host.dataPlane.abort(tag, m.message);
  }

  /**
   * What this peer tells a master that does not know its session: the commits it saw in its epoch. A commit the
   * old master sent only some members before it died is then sent to the others (every member had finished it).
   */
  report(): { committed: string[] } {
    return { committed: [...this.committed] };
  }

  /** After a reconnect: operations waiting for their commit report again (the master ignores repeats). */
  resend(): void {
    for (const [key, w] of this.waiters) if (w.epoch === this.host.membership.epoch) this.host.send({ t: 'done', epoch: w.epoch, key });
  }

  failAll(err: Error): void {
    for (const w of this.waiters.values()) w.reject(err);
    this.waiters.clear();
  }

  /** Runs one operation: waits for the group, computes, waits for the commit, publishes. */
  async run<C, R>(spec: CommittedSpec<C, R>): Promise<R> {
    const { membership } = this.host;
    const failure = this.host.failure();
    if (failure) throw failure;
    const { tag, signal, what } = spec;
    if (signal?.aborted) throw new AbortError(`${what} (tag ${tag}) aborted before it started`, { cause: signal.reason });
    const deadline = spec.timeoutMs === 0 ? Infinity : monotonicMs() + spec.timeoutMs;
    // The epoch must still be ready when the operation starts, not only when the wait ended: a newer ring may
    // have arrived in between.
    do await membership.waitReady(membership.epoch, deadline, 'waiting for the group to form', signal);
    while (!membership.isReady(membership.epoch));
    const epoch = membership.epoch;
    const seq = this.tagUses.get(tag) ?? 0;
    this.tagUses.set(tag, seq + 1);
    const run: OpRun = { tag, epoch, key: `${tag}.${seq}` };
    let computed: C;
    this.running.set(run.key, tag);
    try {
      spec.check?.(run);
      computed = await spec.compute(run);
    } catch (err) {
      this.host.stats.opsFailed++;
      throw this.opFailed(err as Error, run, what);
    } finally {
      this.running.delete(run.key);
    }
    const early = this.earlyAborts.get(run.key);
    if (early && epoch === membership.epoch) throw errorFromCode(early.code, early.message);
    if (epoch !== membership.epoch) throw membership.superseded(epoch, what);
    await this.waitCommit(epoch, run.key, what, signal);
    return spec.publish(computed, run);
  }

  /** Runs `op` until it succeeds, retrying retryable failures once the group has re-formed. */
  async withRetries<R>(op: () => Promise<R>, what: string, tag: number, deadline: number, stop: () => boolean = () => false): Promise<R> {
    const { membership } = this.host;
    for (;;) {
      const epoch = membership.epoch;
      try {
        return await op();
      } catch (err) {
        if (!(err instanceof TcclError) || !err.retryable || stop() || monotonicMs() >= deadline) throw err;
        this.host.log().info('operation failed; retrying after the group re-forms', { tag, what, err });
        // A failure that came with a re-form (the usual case) finds the new epoch at once.
        await membership.waitNewEpoch(epoch, Math.min(deadline, monotonicMs() + this.host.reformWaitMs()));
        const size = membership.world.groupWorldSize;
        if (size < 2) {
          throw new TooFewPeersError(
            `${what} (tag ${tag}) failed and ${size} peer is left in group ${this.host.peerGroup}; wait for peers to join (updateTopology) or stop`,
            { cause: err },
          );
        }
      }
    }
  }

  /** Turns a data-plane failure into what the caller sees, and tells the master. */
  private opFailed(err: Error, run: OpRun, what: string): Error {
    const { membership } = this.host;
    const { epoch, key } = run;
    const failure = this.host.failure();
    if (epoch !== membership.epoch || failure) return failure ?? membership.superseded(epoch, what, err);
    const e = err as TcclError & { peer?: string };
    if (e instanceof PeerLostError && e.peer) {
      this.host.log().warn('lost a peer during an operation; reporting it', { lost: e.peer, op: key, err: e });
      this.host.send({ t: 'lost', epoch, peer: String(e.peer).slice(0, 300), message: e.message.slice(0, 4000) });
    } else if (!this.earlyAborts.has(key)) {
      const code = typeof e.code === 'string' ? e.code.slice(0, 32) : 'INTERNAL';
      this.host.send({ t: 'fail', epoch, key, code, message: String(e.message).slice(0, 4000) });
    }
    const early = this.earlyAborts.get(key);
    return early ? errorFromCode(early.code, early.message, { cause: err }) : err;
  }

  private waitCommit(epoch: number, key: string, what: string, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        this.waiters.delete(key);
        this.host.send({ t: 'fail', epoch, key, code: 'ABORTED', message: 'aborted by AbortSignal' });
        reject(new AbortError(`${what} (${key}) aborted by AbortSignal`, { cause: signal?.reason }));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const cleanup = () => signal?.removeEventListener('abort', onAbort);
      this.waiters.set(key, {
        epoch,
        resolve: () => { cleanup(); resolve(); },
        reject: (e) => { cleanup(); reject(e); },
      });
      this.host.send({ t: 'done', epoch, key });
    });
  }
}
