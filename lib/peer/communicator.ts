/**
 * The Communicator: one peer's membership in a run. It is a small front over four parts:
 *
 * - {@link ControlClient} (control.ts): the connection to the master: handshake, heartbeats, reconnects;
 * - {@link Membership} (membership.ts): epochs and rings (installed into the data plane), readiness, votes;
 * - {@link Collectives} (collectives.ts): all-reduce committed through the master (committed.ts), retries, scratch
 *   arrays; {@link RingCollectives} (ring-collectives.ts): broadcast, all-gather, reduce-scatter the same way;
 * - {@link SyncClient} (sync-client.ts): the peer's half of syncSharedState.
 *
 * Each operation is confirmed by the master: it counts as done only when every member of the group finished it,
 * so after a failure no peer holds a result the others do not have, and every input buffer still holds its
 * input. See docs/communicator.md.
 */
import type { AllReduceOptions, DataPlane } from '../collective';
import { DEFAULT_CONNECTIONS } from '../collective';
import { DeviceAllReduceOptions, DeviceAllReduceResult, DeviceBuffer, allReduceAny } from '../device';
import type { TensorArray } from '../dtype';
import { Engine } from '../engine';
import { ClosedError, InvalidArgumentError, traced } from '../errors';
import { Logger } from '../log';
import { MasterMsg, PeerMsg, PeerStats, emptyPeerStats } from '../protocol';
import { SharedState } from '../shared-state/state';
import { checkInt, checkString, parseMasterList } from '../validate';
import { Admission, DEFAULT_WARN_ALONE_MS, checkAdmissionOptions } from './admission';
import { AllReduceManyOptions, Collectives, CommunicatorAllReduceResult, ManyItem } from './collectives';
import type { PeerContext } from './context';
import { ControlClient } from './control';
import { processIdentity } from './identity';
import { Membership, UpdateTopologyResult } from './membership';
import type { CommunicatorOptions } from './options';
import { Prober } from './probe';
import { RingCollectives, type AllGatherOptions, type AllGatherResult, type BroadcastOptions, type BroadcastResult, type ReduceScatterOptions, type ReduceScatterResult } from './ring-collectives';
import { SyncClient, SyncSharedStateOptions, SyncSharedStateResult } from './sync-client';
import { OptimizeTopologyOptions, OptimizeTopologyResult, TopologyClient } from './topology';
import { monotonicMs } from '../clock';

export type {
  AllGatherOptions, AllGatherResult, BroadcastOptions, BroadcastResult, ReduceScatterOptions, ReduceScatterResult,
  AllReduceManyOptions, CommunicatorAllReduceResult, ManyItem, OptimizeTopologyOptions, OptimizeTopologyResult, SyncSharedStateOptions,
  SyncSharedStateResult, UpdateTopologyResult, CommunicatorOptions,
};

/**
 * A plain state object also accepted by {@link Communicator.syncSharedState} (e.g. DiLoCo's default state): every
 * entry takes part (dtype from the array type), written in place; `revision` is updated like SharedState's.
 */
export interface PlainSharedState {
  revision: number;
  entries: Record<string, TensorArray>;
}

const DEFAULT_CONNECT_TIMEOUT_MS = 300_000;
const DEFAULT_RECONNECT_TIMEOUT_MS = 60_000;
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/**
 * @example
 * ```ts
 * const comm = await Communicator.connect({ master: '10.0.0.1:48148', token: process.env.TCCL_TOKEN });
 * const [r] = await comm.allReduceMany([grad], { op: 'avg' }); // retried after a peer is lost
 * await comm.updateTopology();                                  // admit peers waiting to join
 * await comm.close();
 * ```
 */
export class Communicator {
  readonly peerGroup: number;
  private log: Logger;
  private readonly dataPlane: DataPlane;
  private readonly control: ControlClient;
  private readonly membership: Membership;
  private readonly collectives: Collectives;
  private readonly ring: RingCollectives;
  private readonly syncClient: SyncClient;
  private readonly prober: Prober;
  private readonly topology: TopologyClient;
  private readonly admission: Admission;
  private failure?: Error;
  private readonly counters: PeerStats = emptyPeerStats();

  private constructor(options: CommunicatorOptions, dataPlane: DataPlane) {
    const masters = parseMasterList(options.master);
    this.peerGroup = options.peerGroup ?? 0;
    this.log = new Logger('peer', options.logLevel, 'warn', undefined, options.logFormat);
    this.dataPlane = dataPlane;
    this.counters.connections = options.connections ?? DEFAULT_CONNECTIONS;
    const ctx: PeerContext = {
      peerGroup: this.peerGroup,
      dataPlane,
      identity: options.token !== undefined ? processIdentity() : undefined,
      log: () => this.log,
      send: (m: PeerMsg) => this.control.send(m),
      stats: this.counters,
      failure: () => this.failure,
    };
    this.control = new ControlClient(
      {
        masters, token: options.token, peerGroup: this.peerGroup, advertiseAddress: options.advertiseAddress, label: options.label,
        dataPort: dataPlane.port, autoAdmit: options.admission === 'auto', reconnectTimeoutMs: options.reconnectTimeoutMs ?? DEFAULT_RECONNECT_TIMEOUT_MS,
        identity: ctx.identity?.publicKey,
        stats: () => this.counters,
        report: () => ({ ...this.membership.report(), ...this.collectives.ops.report(), ...this.syncClient.report() }),
      },
      {
        message: (m) => this.route(m),
        resumed: () => {
          this.counters.reconnects++;
          this.collectives.ops.resend();
          this.membership.resend();
          this.membership.wake();
        },
        ended: (err) => void this.shutdown(err, false),
      },
      this.log,
    );
    const membership = new Membership({
      ...ctx, reconnecting: () => this.control.reconnecting, masterAddress: () => this.control.address,
      controlBehind: () => this.control.behind(), controlCaughtUp: (signal) => this.control.caughtUp(signal),
    });
    this.membership = membership;
    this.collectives = new Collectives({ ...ctx, membership, reformWaitMs: () => 2 * this.control.heartbeat.timeoutMs });
    this.ring = new RingCollectives({ ...ctx, membership, reformWaitMs: () => 2 * this.control.heartbeat.timeoutMs }, this.collectives.ops);
    this.syncClient = new SyncClient({ ...ctx, membership, id: () => this.control.id });
    this.topology = new TopologyClient({ ...ctx, membership, id: () => this.control.id });
    this.admission = new Admission({ ...ctx, membership, auto: options.admission === 'auto', warnAloneMs: options.warnAloneMs ?? DEFAULT_WARN_ALONE_MS });
    this.prober = new Prober((m) => this.control.send(m), () => this.control.id);
  }

  /**
   * Registers with the master and resolves once this peer is part of its group (at once for the first peer,
   * otherwise after the members vote it in with updateTopology()).
   */
  static async connect(options: CommunicatorOptions): Promise<Communicator> {
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('Expected an options object with "master"');
    parseMasterList(options.master);
    checkInt('peerGroup', options.peerGroup ?? 0, 0, 0xffffffff);
    if (options.token !== undefined) checkString('token', options.token);
    if (options.advertiseAddress !== undefined) checkString('advertiseAddress', options.advertiseAddress);
    const timeoutMs = checkInt('timeoutMs', options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS, 0, MAX_TIMEOUT_MS);
    checkInt('reconnectTimeoutMs', options.reconnectTimeoutMs ?? DEFAULT_RECONNECT_TIMEOUT_MS, 0, MAX_TIMEOUT_MS);
    const worldSize = checkAdmissionOptions(options);
    const engine = Engine.create({
      host: options.listenHost ?? '0.0.0.0', port: options.dataPort ?? 0, connections: options.connections ?? DEFAULT_CONNECTIONS,
      sourceAddress: options.sourceAddress,
    });
    const c = new Communicator(options, engine);
    const deadline = timeoutMs === 0 ? Infinity : monotonicMs() + timeoutMs;
    try {
      await c.control.openAny(deadline);
      c.log = c.log.child(`peer ${c.control.id}`);
      await c.membership.waitReady(1, deadline, 'waiting to be accepted into the group');
      if (worldSize > 1) await c.admission.waitForPeers(worldSize, deadline === Infinity ? 0 : Math.max(1, deadline - monotonicMs()));
    } catch (err) {
      await c.shutdown(err as Error, false);
      throw err;
    }
    return c;
  }

  /** This peer's id at the master (e.g. `p3`). */
  get id(): string {
    return this.control.id;
  }

  /** Accepted peers in the whole run (all groups). */
  get worldSize(): number {
    return this.membership.world.worldSize;
  }

  /** Accepted peers in this peer's group: the size of its ring. */
  get groupWorldSize(): number {
    return this.membership.world.groupWorldSize;
  }

  /** Peer groups with at least one accepted peer. */
  get peerGroups(): number {
    return this.membership.world.peerGroups;
  }

  /** The current group epoch (it increases whenever the ring changes). */
  get currentEpoch(): number {
    return this.membership.epoch;
  }

  /** The members of the current ring, in ring order, by their master ids (e.g. `['p1', 'p4']`). */
  get members(): string[] {
    return this.membership.members;
  }

  /** Whether peers wait to be accepted into this group (call updateTopology() to accept them). */
  arePeersPending(): boolean {
    return this.membership.world.pending > 0;
  }

  /**
   * What this peer did so far (bytes, all-reduces and their time, syncs, reconnects): the counters it reports to
   * the master with every heartbeat, which serves them as metrics (docs/operations.md).
   */
  get stats(): Readonly<PeerStats> {
    return { ...this.counters };
  }

  /** Why this communicator stopped working, if it did (dropped, master lost, closed). */
  get error(): Error | undefined {
    return this.failure;
  }

  /**
   * Votes to accept pending peers. Resolves when every member of the group has called it and the new ring (if
   * any peer was accepted) is installed everywhere. A barrier even with nobody pending.
   */
  async updateTopology(options: { timeoutMs?: number } = {}): Promise<UpdateTopologyResult> {
    const timeoutMs = checkInt('timeoutMs', options.timeoutMs ?? 0, 0, MAX_TIMEOUT_MS);
    this.checkUsable();
    this.admission.takeVote(); // this call is the vote an announced admission asks for
    return this.membership.vote(timeoutMs);
  }

  /**
   * Resolves once the group has at least `n` members, voting waiting peers in (updateTopology's vote). Every member
   * calls it with the same `n`. TimeoutError after `timeoutMs` (default 300000; 0 = never) names who is missing.
   * @example
   * ```ts
   * await comm.waitForPeers(4, { timeoutMs: 120_000 }); // every worker, before training
   * ```
   */
  waitForPeers(n: number, options: { timeoutMs?: number } = {}): Promise<void> {
    return traced(async () => {
      checkInt('n', n, 1, 1 << 20);
      const timeoutMs = checkInt('timeoutMs', options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS, 0, MAX_TIMEOUT_MS);
      this.checkUsable();
      await this.admission.waitForPeers(n, timeoutMs);
    });
  }

  /**
   * Measures every directed link of the group and re-orders the ring for speed. Collective: every member calls
   * it (like updateTopology). Each pair of peers is measured over the data plane (the link's K connections:
   * RTT, then a probe sized to last about 0.25 s, one partner at a time); the master keeps the matrix, solves
   * for the ring order with the least predicted all-reduce time of `bytes` (exact up to 12 peers, a local
   * search above, in a worker thread) and, when it is predicted faster by more than `minGain`, installs it by
   * re-forming the group (operations in flight fail as superseded, as with any re-form). See docs/topology.md.
   *
   * Errors: PeerLostError (retryable: a peer was lost while measuring; the group keeps its order), TimeoutError
   * (not every member called it, or a link did not answer), ClosedError.
   *
   * @example
   * ```ts
   * const r = await comm.optimizeTopology({ bytes: 4 * params.length });
   * console.log(r.applied ? `ring ${r.newOrder.join(' -> ')}: ${r.predictedBeforeMs} -> ${r.predictedAfterMs} ms` : 'order kept');
   * ```
   */
  optimizeTopology(options: OptimizeTopologyOptions = {}): Promise<OptimizeTopologyResult> {
    return traced(async () => {
      await this.admission.beforeOp();
      return this.topology.optimize(options);
    });
  }

  /**
   * All-reduce over the group. Resolves when every member has the result; on failure every member's input is
   * left as it was. A PeerLostError (retryable) means the group re-forms without a lost peer: retry, or use
   * allReduceMany() which retries for you. A group of one returns its input. A DeviceBuffer is staged through
   * pinned host memory with the same semantics.
   */
  allReduce(data: DeviceBuffer, options?: DeviceAllReduceOptions): Promise<DeviceAllReduceResult>;
  allReduce<T extends TensorArray>(data: T, options?: AllReduceOptions<T>): Promise<CommunicatorAllReduceResult<T>>;
  allReduce(data: TensorArray | DeviceBuffer, options?: object): Promise<unknown> {
    return allReduceAny(this, data, options, (d, o) => traced(async () => {
      await this.admission.beforeOp();
      return this.collectives.allReduce(d, o);
    }));
  }

  /**
   * Runs many all-reduces (up to `maxInFlight` at once, item i with tag `tagBase + i`), retrying failed ones
   * after the group re-forms until all succeed. Rejects with TooFewPeersError when a failure leaves this peer
   * alone in its group, or with the first non-retryable error.
   */
  allReduceMany<T extends TensorArray>(items: ManyItem<T>[], options: AllReduceManyOptions = {}): Promise<CommunicatorAllReduceResult<T>[]> {
    return traced(async () => {
      // One boundary for the whole batch: its items run in one group, however the announcement falls among them.
      await this.admission.beforeOp();
      return this.collectives.allReduceMany(items, options, (data, opts) => traced(() => this.collectives.allReduce(data, opts)));
    });
  }

  /**
   * Gives every member the root's `data` (in place, after the commit); retried with the survivors after a loss,
   * RootLostError (`ROOT_LOST`) if the root itself is lost. Same length, dtype, tag, root everywhere.
   *
   * @example
   * ```ts
   * const { root } = await comm.broadcast(weights, { root: 0 }); // rank 0's weights everywhere; root: its id
   * ```
   */
  broadcast<T extends TensorArray>(data: T, options: BroadcastOptions): Promise<BroadcastResult<T>> {
    return traced(async () => (await this.admission.beforeOp(), this.ring.broadcast(data, options)));
  }

  /**
   * Concatenates every member's `data` (in `participants` order) into a new array; `varying: true` lets lengths
   * differ (`counts` says each). Retried with the survivors after a loss: then it has a part per survivor.
   *
   * @example
   * ```ts
   * const { data, counts, participants } = await comm.allGather(myShard, { varying: true });
   * ```
   */
  allGather<T extends TensorArray>(data: T, options: AllGatherOptions = {}): Promise<AllGatherResult<T>> {
    return traced(async () => (await this.admission.beforeOp(), this.ring.allGather(data, options)));
  }

  /**
   * Reduces `data` (same length everywhere; not changed) and returns this peer's chunk `[offset, offset + length)`
   * of the result, split evenly in `participants` order; retried with the survivors, whom the chunks then follow.
   *
   * @example
   * ```ts
   * const { data: shard, offset } = await comm.reduceScatter(grad, { op: 'avg' });
   * ```
   */
  reduceScatter<T extends TensorArray>(data: T, options: ReduceScatterOptions = {}): Promise<ReduceScatterResult<T>> {
    return traced(async () => (await this.admission.beforeOp(), this.ring.reduceScatter(data, options)));
  }

  /**
   * Makes `state` bit-identical on every member of the group. Every member must call it (like updateTopology;
   * the master waits up to its `voteTimeoutMs`). Each peer hashes its entries and reports them; the master
   * elects the group's state (see docs/shared-state.md), and out-of-date peers fetch the entries that differ
   * from the up-to-date peers over the data plane, split between several sources, verify the hashes, and only
   * then write them into their live arrays (a failed sync leaves this peer's state exactly as it was).
   *
   * Increase `state.revision` by exactly one before each sync; a peer that does not fails with a StateError
   * `STATE_REVISION` naming the expected revision (peers new to the group and receiveOnly peers are exempt: they
   * take the elected revision). allowContentInequality entries are neither compared nor sent.
   *
   * Errors: StateError with code `STATE_REVISION`, `STATE_SENDONLY_CONFLICT` (this sendOnly peer disagreed with
   * another one; it is also removed from the group), `STATE_NO_SOURCE` (no peer offers its state),
   * `STATE_LAYOUT_MISMATCH` (this peer's keys, dtypes or sizes differ from the elected state),
   * `STATE_HASH_MISMATCH` (an entry could not be received intact from any source); TimeoutError (not every member
   * called it in time, or `timeoutMs`), AbortError (`signal`), ClosedError. A peer lost during the transfer does
   * not fail the sync: the group re-forms and the master elects again among the survivors.
   *
   * @example
   * ```ts
   * const state = new SharedState({ weights: new Float32Array(n), step: new Float64Array(1) });
   * for (;;) {
   *   train(state);
   *   await comm.updateTopology();           // admit newcomers
   *   state.revision++;
   *   const r = await comm.syncSharedState(state); // a newcomer (strategy: 'receiveOnly') receives everything
   *   if (r.changedKeys.length) console.log(`received ${r.changedKeys.join(', ')} (${r.bytesReceived} bytes)`);
   * }
   * ```
   */
  syncSharedState(state: SharedState | PlainSharedState, options: SyncSharedStateOptions = {}): Promise<SyncSharedStateResult> {
    return traced(async () => {
      this.checkUsable();
      await this.admission.beforeOp();
      let shared: SharedState;
      let plain: PlainSharedState | undefined;
      if (state instanceof SharedState) shared = state;
      else if (typeof state === 'object' && state !== null && typeof state.entries === 'object' && state.entries !== null) {
        plain = state;
        shared = new SharedState(state.entries, { revision: state.revision }); // wraps the same arrays, no copy
      } else {
        throw new InvalidArgumentError('Expected "state" to be a SharedState (or a { revision, entries } object)');
      }
      try {
        return await this.syncClient.sync(shared, options);
      } finally {
        if (plain) plain.revision = shared.revision;
      }
    });
  }

  /** Leaves the group (the others re-form at once) and releases every socket. Idempotent. */
  async close(): Promise<void> {
    await this.shutdown(new ClosedError('The communicator was closed'), true);
  }

  private checkUsable(): void {
    if (this.failure) throw this.failure;
  }

  /** Sends each message of the master to the part that owns it. */
  private route(m: MasterMsg): void {
    if (this.failure) return;
    switch (m.t) {
      case 'ring': case 'ready': case 'world': case 'voteResult':
        return this.membership.onMessage(m);
      case 'opCommit': case 'opAbort':
        this.collectives.ops.onMessage(m);
        return m.t === 'opCommit' ? this.admission.onCommit(m) : undefined;
      case 'stateDecision': case 'stateRetry': case 'stateCommit': case 'stateFail':
        return this.syncClient.onMessage(m);
      case 'probe':
        return this.prober.onProbe(m);
      case 'topoPlan': case 'topoResult':
        return this.topology.onMessage(m);
    }
  }

  /** Fails everything pending with `err`, tells the master goodbye if asked, and releases the data plane. */
  private async shutdown(err: Error, sayBye: boolean): Promise<void> {
    if (!this.failure) {
      this.failure = err;
      void this.control.close(err, sayBye);
      this.membership.failAll(err);
      this.collectives.ops.failAll(err);
      this.syncClient.interrupt();
      this.topology.failAll(err);
      this.admission.failAll(err);
    }
    // The control thread ends once its goodbye is on the wire.
    await Promise.all([this.dataPlane.close().catch(() => undefined), this.control.close(err, sayBye)]);
  }
}
