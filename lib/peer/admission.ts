/**
 * Admission without ceremony, the peer's half, and waiting for the world:
 *
 * - With `admission: 'auto'` the master marks one commit `admit` when peers wait (lib/master/admission.ts). Every
 *   member receives that same commit, so every member knows the boundary: it votes (the `updateTopology` vote)
 *   before its next operation, and that operation runs in the grown group. An `updateTopology` call that comes
 *   next is itself that vote, so code that still calls it every step keeps working.
 * - {@link Admission.waitForPeers} votes pending peers in until the group has n members.
 * - A peer that keeps running alone while peers wait to join says once in a while what to do.
 */
import { monotonicMs } from '../clock';
import { TimeoutError } from '../errors';
import { checkInt, checkOneOf } from '../validate';
import type { Msg } from '../protocol';
import type { PeerContext } from './context';
import type { Membership } from './membership';

export interface AdmissionHost extends PeerContext {
  readonly membership: Membership;
  /** Vote announced admissions in before the next operation (the `admission: 'auto'` option). */
  readonly auto: boolean;
  /** Warn when this peer ran alone this long with peers pending (ms; 0 = never). */
  readonly warnAloneMs: number;
}

export const DEFAULT_WARN_ALONE_MS = 10_000;

/** Checks the admission options of Communicator.connect; returns the world size to wait for. */
export function checkAdmissionOptions(o: { admission?: unknown; worldSize?: unknown; warnAloneMs?: unknown }): number {
  if (o.admission !== undefined) checkOneOf('admission', o.admission, ['auto', 'manual'] as const);
  checkInt('warnAloneMs', o.warnAloneMs ?? DEFAULT_WARN_ALONE_MS, 0, 2 ** 31 - 1);
  return checkInt('worldSize', o.worldSize ?? 1, 1, 1 << 20);
}

/** How often the warning about running alone is said again, at most. */
const WARN_EVERY_MS = 60_000;

export class Admission {
  /** An announced vote this peer has not cast yet. */
  private due = false;
  /** The announcements acted on in the current epoch (a reconnect says commits again). */
  private seen = new Set<string>();
  private voting?: Promise<void>;
  private aloneSince?: number;
  private lastWarn = -Infinity;
  private readonly waiters = new Set<(err: Error) => void>();

  constructor(private readonly host: AdmissionHost) {
    host.membership.onNewEpoch(() => {
      this.seen = new Set();
    });
  }

  /** An `opCommit`: when it announces an admission, this peer owes a vote before its next operation. */
  onCommit(m: Msg<'opCommit'>): void {
    if (!m.admit || !this.host.auto) return;
    const id = `${m.epoch}:${m.key}`;
    if (this.seen.has(id)) return;
    this.seen.add(id);
    this.due = true;
    this.host.log().info('admission announced: voting pending peers in before the next operation', { op: m.key, pending: this.host.membership.world.pending });
  }

  /**
   * Called before an operation starts: casts the vote an announcement asked for (and waits until the grown
   * group is installed), or waits for the one in flight.
   */
  async beforeOp(): Promise<void> {
    this.warnIfAlone();
    if (this.due) {
      this.due = false;
      // The library's own vote never fails the user's operation: a vote that times out (a member whose next
      // operation came later than the master's vote timeout) ends the round, and the master announces a new
      // one at a later commit (lib/master/admission.ts). A failed communicator fails the operation by itself.
      const vote: Promise<void> = this.host.membership.vote(0).then(
        (r) => this.host.log().info('admission vote passed', { epoch: r.epoch, accepted: r.accepted }),
        (err: Error) => this.host.log().warn('admission vote did not complete; the master announces it again', { error: err.message }),
      ).finally(() => {
        if (this.voting === vote) this.voting = undefined;
      });
      this.voting = vote;
    }
    if (this.voting) await this.voting;
  }

  /** An updateTopology call: it is the vote an announcement asked for, if one is owed. */
  takeVote(): void {
    this.due = false;
  }

  /**
   * Resolves once this peer's group has at least `n` members, voting pending peers in (the updateTopology vote)
   * whenever some wait. Every member calls it with the same `n`. Rejects with TimeoutError at `timeoutMs` (0 =
   * never), naming how many are missing and the pending peers the master reported.
   */
  async waitForPeers(n: number, timeoutMs: number): Promise<void> {
    const { membership } = this.host;
    const deadline = timeoutMs === 0 ? Infinity : monotonicMs() + timeoutMs;
    const timedOut = () => {
      const have = membership.members;
      const w = membership.world;
      const named = w.pendingPeers?.length ? `: ${w.pendingPeers.join(', ')}${w.pending > w.pendingPeers.length ? ', ...' : ''}` : '';
      return new TimeoutError(
        `waitForPeers(${n}) timed out after ${timeoutMs} ms: group ${this.host.peerGroup} has ${have.length} member(s) (${have.join(', ')}), ` +
          `${n - have.length} missing; ${w.pending} peer(s) pending${named}. Start the missing workers (same master, group and token), or lower the world size`,
      );
    };
    for (;;) {
      try {
        await membership.waitReady(membership.epoch, deadline, `waiting for ${n} peers`);
      } catch (err) {
        throw err instanceof TimeoutError ? timedOut() : err;
      }
      if (!membership.isReady(membership.epoch)) continue;
      if (membership.ring.length >= n) return;
      if (membership.world.pending > 0) {
        this.takeVote();
        const left = deadline - monotonicMs();
        if (left <= 0) throw timedOut();
        try {
          await membership.vote(deadline === Infinity ? 0 : Math.max(1, Math.ceil(left)));
        } catch (err) {
          // The master's vote timeout (a pending peer left before another member saw it): look again.
          if (!(err instanceof TimeoutError)) throw err;
          if (monotonicMs() >= deadline) throw timedOut();
        }
        continue;
      }
      if (!(await this.changeBefore(deadline))) throw timedOut();
    }
  }

  /** Resolves true at the next `world` view or `ready`, false at `deadline`; rejects when the communicator fails. */
  private changeBefore(deadline: number): Promise<boolean> {
    const failure = this.host.failure();
    if (failure) return Promise.reject(failure);
    return new Promise<boolean>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const finish = (settle: () => void) => {
        stop();
        this.waiters.delete(fail);
        if (timer) clearTimeout(timer);
        settle();
      };
      const stop = this.host.membership.onChange(() => finish(() => resolve(true)));
      const fail = (err: Error) => finish(() => reject(err));
      this.waiters.add(fail);
      if (deadline !== Infinity) timer = setTimeout(() => finish(() => resolve(false)), Math.max(0, deadline - monotonicMs()));
    });
  }

  /** The communicator stopped: waitForPeers calls reject with `err`. */
  failAll(err: Error): void {
    for (const w of [...this.waiters]) w(err);
  }

  /** Says, at most once a minute, that this peer keeps running alone while peers wait to join. */
  private warnIfAlone(): void {
    const { membership } = this.host;
    const alone = membership.ring.length === 1 && membership.world.pending > 0;
    if (!alone) {
      this.aloneSince = undefined;
      return;
    }
    const now = monotonicMs();
    this.aloneSince ??= now;
    if (this.host.warnAloneMs === 0 || now - this.aloneSince < this.host.warnAloneMs || now - this.lastWarn < WARN_EVERY_MS) return;
    this.lastWarn = now;
    const w = membership.world;
    this.host.log().warn(
      `running alone in group ${this.host.peerGroup} for ${Math.round((now - this.aloneSince) / 1000)} s while ${w.pending} peer(s) wait to join` +
        `${w.pendingPeers?.length ? ` (${w.pendingPeers.join(', ')})` : ''}: ` +
        (this.host.auto
          ? 'the master announces a vote at the next operation every member completes, and they join once every member has voted'
          : 'call comm.updateTopology() on every member at the same point of the loop, or connect with { admission: \'auto\' } (the default of init())'),
      { pending: w.pending },
    );
  }
}
