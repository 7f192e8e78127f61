/**
 * A peer's view of its group: the epoch and ring the master sent (installed into the data plane at once, which
 * fails every operation of an older epoch), whether that epoch is ready everywhere, the world counts, and the
 * votes (`updateTopology`). Operations wait here until their epoch is ready.
 */
import type { NativePeer } from '../binding';
import { AbortError, PeerLostError, ProtocolError, TimeoutError, errorFromCode } from '../errors';
import type { Msg } from '../protocol';
import type { PeerContext } from './context';
import { linkSecurity } from './identity';
import { monotonicMs } from '../clock';

/** What membership needs of the rest of the peer. */
export interface MembershipHost extends PeerContext {
  /** The control connection is being re-established (nothing is ready meanwhile). */
  reconnecting(): boolean;
  /** `host:port` of the master, for messages. */
  masterAddress(): string;
  /** Messages of the master wait to be handled (this thread was busy): what this peer knows may be stale. */
  controlBehind(): boolean;
  /** Resolves once they were handled; `signal` withdraws the wait (it then never settles). */
  controlCaughtUp(signal?: AbortSignal): Promise<void>;
}

interface ReadyWaiter {
  epoch: number;
  resolve: () => void;
  reject: (e: Error) => void;
}

export interface UpdateTopologyResult {
  /** The epoch after the vote. */
  epoch: number;
  /** Peers accepted by this vote. */
  accepted: number;
}

export class Membership {
  epoch = 0;
  private readyEpoch = 0;
  ring: NativePeer[] = [];
  /** This peer's place in `ring`. */
  index = 0;
  /** Why the current ring was formed (the master's words). */
  reason = '';
  world: { worldSize: number; groupWorldSize: number; peerGroups: number; pending: number; pendingPeers?: string[] } = {
    worldSize: 0, groupWorldSize: 0, peerGroups: 0, pending: 0,
  };
  private waiters: ReadyWaiter[] = [];
  private readonly votes = new Map<number, { resolve: (m: Msg<'voteResult'>) => void; reject: (e: Error) => void }>();
  private nextVote = 1;
  /**
   * Barrier votes (nobody accepted) completed in an epoch: every member of the epoch took part in each, so a
   * member with fewer than another had a result cut off by a master crash (resume.ts).
   */
  private barriers = { epoch: 0, count: 0 };
  /** Called with (new epoch, old epoch) after a ring of a newer epoch is installed. */
  private readonly epochListeners: ((epoch: number, old: number) => void)[] = [];
  /** Called after a `world` view or a `ready` arrived (admission.ts waits on them). */
  private readonly changeListeners = new Set<() => void>();

  constructor(private readonly host: MembershipHost) {}

  /** What this peer tells a master that does not know its session (lib/protocol/resume.ts). */
  report(): { epoch: number; member: boolean; ring: NativePeer[]; votes: number } {
    return { epoch: this.epoch, member: this.epoch > 0, ring: this.ring.map((p) => ({ id: p.id, host: p.host, port: p.port })),
      votes: this.barriers.epoch === this.epoch ? this.barriers.count : 0,
    };
  }

  /** The members of the current ring, in ring order, by their master ids. */
  get members(): string[] {
    return this.ring.map((p) => p.id.split('@')[0]);
  }

  /**
   * `epoch` is installed on every member: operations may run in it. Not while messages of the master wait to be
   * handled: after a long synchronous step a newer ring may be among them.
   */
  isReady(epoch: number): boolean {
    return this.readyEpoch === epoch && this.epoch === epoch && !this.host.reconnecting() && !this.host.controlBehind();
  }

  onNewEpoch(listener: (epoch: number, old: number) => void): void {
    this.epochListeners.push(listener);
  }

  /** Calls `listener` after every `world` view and `ready`; returns the function that stops it. */
  onChange(listener: () => void): () => void {
    this.changeListeners.add(listener);
    return () => this.changeListeners.delete(listener);
  }

  /** Handles `ring`, `ready`, `world` and `voteResult`. */
  onMessage(m: Msg<'ring' | 'ready' | 'world' | 'voteResult'>): void {
    switch (m.t) {
      case 'ring': return this.onRing(m);
      case 'ready':
        if (m.epoch === this.epoch && m.epoch > this.readyEpoch) {
          this.readyEpoch = m.epoch;
          this.wake();
          for (const l of [...this.changeListeners]) l();
        }
        return;
      case 'world':
        this.world = { worldSize: m.worldSize, groupWorldSize: m.groupWorldSize, peerGroups: m.peerGroups, pending: m.pending, pendingPeers: m.pendingPeers };
        for (const l of [...this.changeListeners]) l();
        return;
      case 'voteResult':
        this.votes.get(m.id)?.resolve(m);
        return;
    }
  }

  /** A ring of a newer epoch is installed at once: the data plane fails everything of older epochs. */
  private onRing(m: Msg<'ring'>): void {
    if (m.epoch < this.epoch) return;
    if (m.epoch > this.epoch) {
      if (m.index >= m.peers.length) throw new ProtocolError(`Ring of epoch ${m.epoch} has no member at index ${m.index}`);
      const id = this.host.identity;
      const security = id && m.keys ? linkSecurity(id, m.keys, m.peers.length, m.index) : undefined;
      this.host.dataPlane.configure(m.epoch, m.index, m.peers, new Uint8Array(m.ticket), security);
      const old = this.epoch;
      this.epoch = m.epoch;
      this.ring = m.peers;
      this.index = m.index;
      this.reason = m.reason;
      this.host.log().info('installed ring', { epoch: m.epoch, index: m.index, size: m.peers.length, reason: m.reason });
      for (const l of this.epochListeners) l(m.epoch, old);
    }
    this.host.send({ t: 'ack', epoch: m.epoch });
  }

  /** The retryable error of an operation of `epoch` that a newer ring ended. */
  superseded(epoch: number, what = 'All-reduce', cause?: Error): PeerLostError {
    return new PeerLostError(
      `${what} aborted: group ${this.host.peerGroup} re-formed (epoch ${epoch} -> ${this.epoch}: ${this.reason}); retry`,
      undefined,
      { cause },
    );
  }

  /**
   * Resolves when the current epoch (at least `epoch`) is ready; rejects at `deadline` (TimeoutError), on
   * `signal` (AbortError) or when the communicator fails.
   */
  waitReady(epoch: number, deadline: number, what: string, signal?: AbortSignal): Promise<void> {
    const failure = this.host.failure();
    if (failure) return Promise.reject(failure);
    if (this.host.controlBehind()) return this.caughtUp(deadline, what, signal).then(() => this.waitReady(epoch, deadline, what, signal));
    if (this.readyEpoch >= epoch && this.isReady(this.epoch)) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const finish = () => {
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.waiters = this.waiters.filter((x) => x !== w);
      };
      const w: ReadyWaiter = {
        epoch,
        resolve: () => { finish(); resolve(); },
        reject: (e) => { finish(); reject(e); },
      };
      const onAbort = () => w.reject(new AbortError(`Aborted while ${what}`, { cause: signal?.reason }));
      if (deadline !== Infinity) {
        timer = setTimeout(
          () => w.reject(new TimeoutError(`Timed out ${what} (group ${this.host.peerGroup}, master ${this.host.masterAddress()})`)),
          Math.max(0, deadline - monotonicMs()),
        );
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(w);
    });
  }

  /**
   * Resolves once the master's messages that waited for this thread were handled; rejects at `deadline` and on
   * `signal` like waitReady, so an operation's timeout holds while this thread catches up.
   */
  private caughtUp(deadline: number, what: string, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const withdraw = new AbortController();
      let timer: NodeJS.Timeout | undefined;
      const settle = (err?: Error) => {
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        withdraw.abort();
        if (err) reject(err);
        else resolve();
      };
      const onAbort = () => settle(new AbortError(`Aborted while ${what}`, { cause: signal?.reason }));
      if (signal?.aborted) return onAbort();
      if (deadline !== Infinity) {
        timer = setTimeout(
          () => settle(new TimeoutError(`Timed out ${what}: the master's messages still wait for this thread (group ${this.host.peerGroup}, master ${this.host.masterAddress()})`)),
          Math.max(0, deadline - monotonicMs()),
        );
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      this.host.controlCaughtUp(withdraw.signal).then(() => settle(), settle);
    });
  }

  /** Resolves when an epoch newer than `epoch` is ready, or at `deadline` (without error). */
  async waitNewEpoch(epoch: number, deadline: number): Promise<void> {
    try {
      await this.waitReady(epoch + 1, deadline, 'waiting for the group to re-form');
    } catch (err) {
      if (!(err instanceof TimeoutError)) throw err;
    }
  }

  /** Wakes the waiters whose epoch is ready (after `ready`, or when a reconnect completes). */
  wake(): void {
    if (this.readyEpoch !== this.epoch || this.host.reconnecting()) return;
    for (const w of [...this.waiters]) if (w.epoch <= this.readyEpoch) w.resolve();
  }

  /**
   * Votes to accept pending peers (see Communicator.updateTopology): resolves when every member voted and the
   * resulting ring is installed everywhere.
   */
  async vote(timeoutMs: number): Promise<UpdateTopologyResult> {
    const id = this.nextVote++;
    const result = await new Promise<Msg<'voteResult'>>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const done = () => {
        if (timer) clearTimeout(timer);
        this.votes.delete(id);
      };
      this.votes.set(id, { resolve: (v) => { done(); resolve(v); }, reject: (e) => { done(); reject(e); } });
      if (timeoutMs > 0) {
        timer = setTimeout(() => {
          done();
          reject(new TimeoutError(`updateTopology did not complete within ${timeoutMs} ms: not every member of group ${this.host.peerGroup} voted`));
        }, timeoutMs);
      }
      this.host.send({ t: 'vote', id });
    });
    if (!result.ok) throw errorFromCode(result.code ?? 'INTERNAL', result.message ?? 'updateTopology failed');
    if (result.accepted === 0) {
      if (this.barriers.epoch !== result.epoch) this.barriers = { epoch: result.epoch, count: 0 };
      this.barriers.count++;
    }
    await this.waitReady(result.epoch, Infinity, 'installing the new ring');
    return { epoch: result.epoch, accepted: result.accepted };
  }

  /** After a reconnect: votes in flight are said again (the master ignores repeats). */
  resend(): void {
    for (const id of this.votes.keys()) this.host.send({ t: 'vote', id });
  }

  /** Fails every waiter and vote with `err`. */
  failAll(err: Error): void {
    for (const w of [...this.waiters]) w.reject(err);
    for (const v of [...this.votes.values()]) v.reject(err);
    this.votes.clear();
  }
}
