/**
 * The Communicator: one peer's membership in a run. It registers with the master (proving the run token),
 * waits until the group votes it in, installs every ring the master sends into the data-plane Engine, and runs
 * collectives on it. Each operation is confirmed by the master: it counts as done only when every member of
 * the group finished it, so after a failure no peer holds a result the others do not have, and every input
 * buffer still holds its input. See docs/communicator.md.
 */
import * as net from 'node:net';
import { native } from '../binding';
import { DeviceAllReduceOptions, DeviceAllReduceResult, DeviceBuffer, allReduceDevice } from '../device';
import { DType, TensorArray, resolveDType, resolveReduceOp } from '../dtype';
import { AllReduceOptions, AllReduceResult, Engine, NativePeerLike } from './engine-like';
import {
  AbortError, AuthError, ClosedError, PeerLostError, ProtocolError, StateError, TcclError, TimeoutError, TooFewPeersError,
} from '../errors';
import { Logger, LogLevel } from '../log';
import {
  Challenge, Connection, ErrorMsg, OpAbort, OpCommit, PROTOCOL_NAME, PROTOCOL_VERSION, Ready, Ring, StateCommitMsg,
  StateDecisionMsg, StateFailMsg, StateRetryMsg, VoteResult, Welcome, World, Dropped, makeNonce, masterProof, peerProof,
  proofMatches, validateMessage,
} from '../protocol';
import { SharedState } from '../shared-state/state';
import { hashState } from '../shared-state/hash';
import { SYNC_STRATEGIES, SyncDecision, SyncStrategy } from '../shared-state/election';
import { SyncResult, executeSyncPlan } from '../shared-state/transfer';

export interface CommunicatorOptions {
  /** The master, `host:port` (`[v6]:port` for IPv6). */
  master: string;
  /** Peer group (one ring per group; default 0). */
  peerGroup?: number;
  /** Run token, when the master requires one. */
  token?: string;
  /** TCP connections per data-plane link (default 8). */
  connections?: number;
  /** Address the other peers dial for this peer's data plane (default: the address the master sees). */
  advertiseAddress?: string;
  /** Address the data-plane listener binds (default '0.0.0.0'). */
  listenHost?: string;
  /** Data-plane port (default 0: chosen by the OS). */
  dataPort?: number;
  /** How long connect() waits to be accepted, ms (default 300000; 0 = forever). */
  timeoutMs?: number;
  /** After losing the master, how long to keep trying to reconnect, ms (default 10000). */
  reconnectTimeoutMs?: number;
  /** Name shown in the master's logs. */
  label?: string;
  /** Log level (default TCCL_LOG_LEVEL or 'warn'). */
  logLevel?: LogLevel;
}

/** What an all-reduce through the communicator reports. */
export interface CommunicatorAllReduceResult<T extends TensorArray = TensorArray> extends AllReduceResult<T> {
  /** The group epoch the result was computed in. */
  epoch: number;
}

/** One entry of allReduceMany: an array (reduced in place) or an array with its own options. */
export type ManyItem<T extends TensorArray = TensorArray> = T | ({ data: T } & Omit<AllReduceOptions<T>, 'signal' | 'timeoutMs'>);

export interface AllReduceManyOptions extends Omit<AllReduceOptions, 'output' | 'tag'> {
  /** Operations in flight at once (default 4). */
  maxInFlight?: number;
  /** Item i gets tag `tagBase + i` unless it gives its own (default 0). */
  tagBase?: number;
  /** Gives up retrying after this long in total, ms (default 300000; 0 = never). */
  retryTimeoutMs?: number;
}

export interface UpdateTopologyResult {
  /** The epoch after the vote. */
  epoch: number;
  /** Peers accepted by this vote. */
  accepted: number;
}

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

/**
 * A plain state object also accepted by {@link Communicator.syncSharedState} (e.g. DiLoCo's default state): every
 * entry takes part (dtype from the array type), written in place; `revision` is updated like SharedState's.
 */
export interface PlainSharedState {
  revision: number;
  entries: Record<string, TensorArray>;
}

type StateMsg = StateDecisionMsg | StateRetryMsg | StateCommitMsg | StateFailMsg;

interface Waiter<T> {
  resolve: (v: T) => void;
  reject: (e: Error) => void;
}

interface OpWaiter extends Waiter<void> {
  epoch: number;
}

const DEFAULT_CONNECT_TIMEOUT_MS = 300_000;
const DEFAULT_RECONNECT_TIMEOUT_MS = 10_000;

function checkInt(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new TypeError(`Expected the "${name}" option to be an integer from ${min} to ${max}, got ${String(v)}`);
  }
  return v;
}

/** Parses `host:port` / `[v6]:port`. */
export function parseHostPort(s: unknown, what = 'master'): { host: string; port: number } {
  if (typeof s !== 'string') throw new TypeError(`Expected the "${what}" option to be "host:port", got ${typeof s}`);
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:]+):(\d+)$/.exec(s);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !(port >= 1 && port <= 65535)) throw new TypeError(`Expected the "${what}" option to be "host:port", got ${JSON.stringify(s)}`);
  return { host: m[1], port };
}

function errorFromCode(code: string, message: string): Error {
  switch (code) {
    case 'AUTH': return new AuthError(message);
    case 'PROTOCOL': return new ProtocolError(message);
    case 'PEER_LOST': return new PeerLostError(message);
    case 'TIMEOUT': return new TimeoutError(message);
    case 'ABORTED': return new AbortError(message);
    case 'TOO_FEW_PEERS': return new TooFewPeersError(message);
    case 'CLOSED': case 'DROPPED': return new ClosedError(message);
    default: return new TcclError(code, message);
  }
}

export class Communicator {
  private readonly masterHost: string;
  private readonly masterPort: number;
  readonly peerGroup: number;
  private readonly token?: string;
  private readonly advertiseAddress?: string;
  private readonly reconnectTimeoutMs: number;
  private readonly label?: string;
  private log: Logger;
  private readonly engine: Engine;
  private conn?: Connection;
  private session?: { id: string; secret: Uint8Array };
  /** This peer's id at the master (e.g. `p3`). */
  id = '';
  private epoch = 0;
  private readyEpoch = 0;
  private ring: NativePeerLike[] = [];
  private ringReason = '';
  private world = { worldSize: 0, groupWorldSize: 0, peerGroups: 0, pending: 0 };
  private heartbeat = { intervalMs: 500, timeoutMs: 3000 };
  private failure?: Error;
  private closing = false;
  private reconnecting = false;
  private tagUses = new Map<number, number>();
  private readonly opWaiters = new Map<string, OpWaiter>();
  private earlyAborts = new Map<string, { code: string; message: string }>();
  private readonly voteWaiters = new Map<number, Waiter<VoteResult>>();
  private readonly scratch = new Map<string, TensorArray[]>();
  private readyWaiters: (Waiter<void> & { epoch: number })[] = [];
  private nextVote = 1;
  /** The shared-state sync in progress on this peer: messages for it wait here. */
  private stateSync?: { inbox: StateMsg[]; wake?: () => void; minSync: number; sync?: number };
  /** Highest sync number this peer took part in: later messages of those syncs are stale. */
  private lastSync = 0;
  private handshake?: { nonce: Uint8Array; resolve: () => void; reject: (e: Error) => void; stage: 'challenge' | 'welcome'; conn: Connection };

  private constructor(options: CommunicatorOptions, engine: Engine) {
    const { host, port } = parseHostPort(options.master);
    this.masterHost = host;
    this.masterPort = port;
    this.peerGroup = options.peerGroup ?? 0;
    this.token = options.token;
    this.advertiseAddress = options.advertiseAddress;
    this.reconnectTimeoutMs = options.reconnectTimeoutMs ?? DEFAULT_RECONNECT_TIMEOUT_MS;
    this.label = options.label;
    this.log = new Logger('peer', options.logLevel, 'warn');
    this.engine = engine;
  }

  /**
   * Registers with the master and resolves once this peer is part of its group (at once for the first peer,
   * otherwise after the members vote it in with updateTopology()).
   */
  static async connect(options: CommunicatorOptions): Promise<Communicator> {
    if (typeof options !== 'object' || options === null) throw new TypeError('Expected an options object with "master"');
    parseHostPort(options.master);
    checkInt('peerGroup', options.peerGroup ?? 0, 0, 0xffffffff);
    if (options.token !== undefined && (typeof options.token !== 'string' || options.token === '')) {
      throw new TypeError('Expected the "token" option to be a non-empty string');
    }
    if (options.advertiseAddress !== undefined && (typeof options.advertiseAddress !== 'string' || !options.advertiseAddress)) {
      throw new TypeError('Expected the "advertiseAddress" option to be a non-empty string');
    }
    const timeoutMs = checkInt('timeoutMs', options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS, 0, 2 ** 31 - 1);
    checkInt('reconnectTimeoutMs', options.reconnectTimeoutMs ?? DEFAULT_RECONNECT_TIMEOUT_MS, 0, 2 ** 31 - 1);
    const engine = await createEngine({ host: options.listenHost ?? '0.0.0.0', port: options.dataPort ?? 0, connections: options.connections });
    const c = new Communicator(options, engine);
    try {
      await c.openControl(timeoutMs === 0 ? Infinity : Date.now() + timeoutMs);
      await c.waitReady(1, timeoutMs === 0 ? Infinity : Date.now() + timeoutMs, 'waiting to be accepted into the group');
    } catch (err) {
      await c.shutdown(err as Error, false);
      throw err;
    }
    return c;
  }

  /** Accepted peers in the whole run (all groups). */
  get worldSize(): number {
    return this.world.worldSize;
  }

  /** Accepted peers in this peer's group: the size of its ring. */
  get groupWorldSize(): number {
    return this.world.groupWorldSize;
  }

  /** Peer groups with at least one accepted peer. */
  get peerGroups(): number {
    return this.world.peerGroups;
  }

  /** The current group epoch (it increases whenever the ring changes). */
  get currentEpoch(): number {
    return this.epoch;
  }

  /** The members of the current ring, in ring order, by their master ids (e.g. `['p1', 'p4']`). */
  get members(): string[] {
    return this.ring.map((p) => p.id.split('@')[0]);
  }

  /** Whether peers wait to be accepted into this group (call updateTopology() to accept them). */
  arePeersPending(): boolean {
    return this.world.pending > 0;
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
    const timeoutMs = checkInt('timeoutMs', options.timeoutMs ?? 0, 0, 2 ** 31 - 1);
    this.checkUsable();
    const id = this.nextVote++;
    const result = await new Promise<VoteResult>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const done = () => {
        if (timer) clearTimeout(timer);
        this.voteWaiters.delete(id);
      };
      this.voteWaiters.set(id, { resolve: (v) => { done(); resolve(v); }, reject: (e) => { done(); reject(e); } });
      if (timeoutMs > 0) {
        timer = setTimeout(() => {
          done();
          reject(new TimeoutError(`updateTopology did not complete within ${timeoutMs} ms: not every member of group ${this.peerGroup} voted`));
        }, timeoutMs);
      }
      this.conn?.send({ t: 'vote', id });
    });
    if (!result.ok) throw errorFromCode(result.code ?? 'INTERNAL', result.message ?? 'updateTopology failed');
    await this.waitReady(result.epoch, Infinity, 'installing the new ring');
    return { epoch: result.epoch, accepted: result.accepted };
  }

  /**
   * All-reduce over the group. Resolves when every member has the result; on failure every member's input is
   * left as it was. A PeerLostError (retryable) means the group re-forms without a lost peer: retry, or use
   * allReduceMany() which retries for you. A group of one returns its input.
   */
  allReduce(data: DeviceBuffer, options?: DeviceAllReduceOptions): Promise<DeviceAllReduceResult>;
  allReduce<T extends TensorArray>(data: T, options?: AllReduceOptions<T>): Promise<CommunicatorAllReduceResult<T>>;
  async allReduce(data: TensorArray | DeviceBuffer, options: object = {}): Promise<unknown> {
    // Device memory goes through the host path below (with its retries and commit), staged in pinned memory.
    if (data instanceof DeviceBuffer) return allReduceDevice(this, data, options as DeviceAllReduceOptions);
    const stack = new Error().stack;
    try {
      return await this.runAllReduce(data, options as AllReduceOptions);
    } catch (err) {
      if (err instanceof Error && stack) err.stack = `${err.name}: ${err.message}\n${stack.split('\n').slice(1).join('\n')}`;
      throw err;
    }
  }

  private async runAllReduce<T extends TensorArray>(data: T, options: AllReduceOptions<T>): Promise<CommunicatorAllReduceResult<T>> {
    this.checkUsable();
    const dtype: DType = resolveDType(data, options.dtype);
    resolveReduceOp(options.op);
    const tag = checkInt('tag', options.tag ?? 0, 0, Number.MAX_SAFE_INTEGER);
    const timeoutMs = checkInt('timeoutMs', options.timeoutMs ?? 30_000, 0, 2 ** 31 - 1);
    if (options.output !== undefined) resolveDType(options.output, dtype, 'output');
    const signal = options.signal;
    if (signal?.aborted) throw new AbortError(`All-reduce (tag ${tag}) aborted before it started`, { cause: signal.reason });
    await this.waitReady(this.epoch, timeoutMs === 0 ? Infinity : Date.now() + timeoutMs, 'waiting for the group to form', signal);
    const epoch = this.epoch;
    const seq = this.tagUses.get(tag) ?? 0;
    this.tagUses.set(tag, seq + 1);
    const key = `${tag}.${seq}`;
    const inPlace = options.output === undefined || options.output === data;
    // The engine reduces into a scratch array; the caller's array changes only once every member has the result.
    const out = (inPlace ? this.takeScratch(data) : options.output) as T;
    let r: AllReduceResult<T>;
    try {
      try {
        r = await this.engine.allReduce(data, { ...options, output: out, tag, timeoutMs });
      } catch (err) {
        throw this.opFailed(err as Error, epoch, key);
      }
      const early = this.earlyAborts.get(key);
      if (early && epoch === this.epoch) throw errorFromCode(early.code, early.message);
      if (epoch !== this.epoch) throw this.superseded(epoch);
      await this.waitCommit(epoch, key, signal);
      if (inPlace) await copyInto(data, out);
    } finally {
      if (inPlace) this.returnScratch(out);
    }
    return { data: inPlace ? data : out, worldSize: r.worldSize, bytesSent: r.bytesSent, bytesReceived: r.bytesReceived, epoch };
  }

  /**
   * Scratch arrays for in-place operations, reused so that a training loop does not allocate (and page-fault)
   * a tensor-sized array per all-reduce. A few per shape are kept.
   */
  private takeScratch<T extends TensorArray>(like: T): T {
    const list = this.scratch.get(scratchKey(like));
    return (list?.pop() as T | undefined) ?? new (like.constructor as new (n: number) => T)(like.length);
  }

  private returnScratch(array: TensorArray): void {
    const key = scratchKey(array);
    const list = this.scratch.get(key) ?? [];
    if (list.length < 2) list.push(array);
    this.scratch.set(key, list);
  }

  /**
   * Runs many all-reduces (up to `maxInFlight` at once, item i with tag `tagBase + i`), retrying failed ones
   * after the group re-forms until all succeed. Rejects with TooFewPeersError when a failure leaves this peer
   * alone in its group, or with the first non-retryable error.
   */
  async allReduceMany<T extends TensorArray>(items: ManyItem<T>[], options: AllReduceManyOptions = {}): Promise<CommunicatorAllReduceResult<T>[]> {
    if (!Array.isArray(items)) throw new TypeError('Expected "items" to be an array of TypedArrays or { data, ...options }');
    const maxInFlight = checkInt('maxInFlight', options.maxInFlight ?? 4, 1, 1024);
    const tagBase = checkInt('tagBase', options.tagBase ?? 0, 0, Number.MAX_SAFE_INTEGER);
    const retryTimeoutMs = checkInt('retryTimeoutMs', options.retryTimeoutMs ?? 300_000, 0, 2 ** 31 - 1);
    const deadline = retryTimeoutMs === 0 ? Infinity : Date.now() + retryTimeoutMs;
    const { maxInFlight: _m, tagBase: _t, retryTimeoutMs: _r, ...common } = options;
    const results: CommunicatorAllReduceResult<T>[] = new Array(items.length);
    let next = 0;
    let firstError: Error | undefined;
    const worker = async () => {
      while (firstError === undefined && next < items.length) {
        const i = next++;
        const item = items[i];
        const own = ArrayBuffer.isView(item) ? { data: item as T } : (item as { data: T } & AllReduceOptions<T>);
        if (typeof own !== 'object' || own === null || !ArrayBuffer.isView(own.data)) {
          throw new TypeError(`Expected item ${i} to be a TypedArray or { data, ...options }`);
        }
        const { data, ...itemOpts } = own;
        const opts = { ...common, ...itemOpts, tag: itemOpts.tag ?? tagBase + i } as AllReduceOptions<T>;
        for (;;) {
          const epoch = this.epoch;
          try {
            results[i] = await this.allReduce(data, opts);
            break;
          } catch (err) {
            if (!(err instanceof TcclError) || !err.retryable || firstError !== undefined) throw err;
            if (Date.now() >= deadline) throw err;
            this.log.info('operation failed; retrying after the group re-forms', { peer: this.id, tag: opts.tag, err });
            await this.waitNewEpoch(epoch, Math.min(deadline, Date.now() + 2 * this.heartbeat.timeoutMs));
            if (this.groupWorldSize < 2) {
              throw new TooFewPeersError(
                `All-reduce (tag ${opts.tag}) failed and ${this.groupWorldSize} peer is left in group ${this.peerGroup}; wait for peers to join (updateTopology) or stop`,
                { cause: err },
              );
            }
          }
        }
      }
    };
    const workers = Array.from({ length: Math.min(maxInFlight, items.length) }, () =>
      worker().catch((err: Error) => {
        if (firstError === undefined) firstError = err;
      }),
    );
    await Promise.all(workers);
    if (firstError) throw firstError;
    return results;
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
  async syncSharedState(state: SharedState | PlainSharedState, options: SyncSharedStateOptions = {}): Promise<SyncSharedStateResult> {
    const stack = new Error().stack;
    let shared: SharedState;
    let plain: PlainSharedState | undefined;
    if (state instanceof SharedState) shared = state;
    else if (typeof state === 'object' && state !== null && typeof state.entries === 'object' && state.entries !== null) {
      plain = state;
      shared = new SharedState(state.entries, { revision: state.revision }); // wraps the same arrays, no copy
    } else {
      throw new TypeError('Expected "state" to be a SharedState (or a { revision, entries } object)');
    }
    try {
      return await this.runSync(shared, options);
    } catch (err) {
      if (err instanceof Error && stack) err.stack = `${err.name}: ${err.message}\n${stack.split('\n').slice(1).join('\n')}`;
      throw err;
    } finally {
      if (plain) plain.revision = shared.revision;
    }
  }

  private async runSync(state: SharedState, options: SyncSharedStateOptions): Promise<SyncSharedStateResult> {
    this.checkUsable();
    if (!(state instanceof SharedState)) throw new TypeError('Expected "state" to be a SharedState');
    if (typeof options !== 'object' || options === null) throw new TypeError('Expected syncSharedState options to be an object');
    const strategy = options.strategy ?? 'enforcePopular';
    if (!SYNC_STRATEGIES.includes(strategy)) {
      throw new TypeError(`Expected "strategy" to be one of ${SYNC_STRATEGIES.join(', ')}, got ${JSON.stringify(strategy)}`);
    }
    const timeoutMs = checkInt('timeoutMs', options.timeoutMs ?? 0, 0, 2 ** 31 - 1);
    const progressTimeoutMs = checkInt('progressTimeoutMs', options.progressTimeoutMs ?? 30_000, 0, 2 ** 31 - 1);
    if (this.stateSync) throw new Error('Another syncSharedState is in progress on this communicator: one at a time');
    const signal = options.signal;
    if (signal?.aborted) throw new AbortError('syncSharedState aborted before it started', { cause: signal.reason });
    // One controller for the caller's signal and our deadline; the transfer rounds listen to it.
    const ac = new AbortController();
    let timedOut = false;
    const onAbort = () => ac.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    const timer = timeoutMs > 0 ? setTimeout(() => { timedOut = true; ac.abort(new Error('timeout')); }, timeoutMs) : undefined;
    const run = { inbox: [] as StateMsg[], wake: undefined as (() => void) | undefined, minSync: this.lastSync, sync: undefined as number | undefined };
    this.stateSync = run;
    const stopped = (): Error | undefined => {
      if (this.failure) return this.failure;
      if (!ac.signal.aborted) return undefined;
      return timedOut
        ? new TimeoutError(`syncSharedState did not complete within ${timeoutMs} ms; this peer's state is unchanged unless the sync had committed`)
        : new AbortError('syncSharedState aborted by AbortSignal', { cause: signal?.reason });
    };
    const next = async (): Promise<StateMsg> => {
      for (;;) {
        // What the master said comes first: a decision that fails this peer explains a `dropped` right after it.
        const m = run.inbox.shift();
        if (m) return m;
        const stop = stopped();
        if (stop) throw stop;
        await new Promise<void>((resolve) => {
          run.wake = resolve;
          ac.signal.addEventListener('abort', () => resolve(), { once: true });
          if (this.failure) resolve();
        });
        run.wake = undefined;
      }
    };
    const total = { bytesSent: 0, bytesReceived: 0, rounds: 0, retried: [] as string[], unresolved: [] as string[], changed: new Set<string>() };
    const timings = { transferMs: 0, verifyMs: 0, commitMs: 0 };
    let role: SyncResult['role'] = 'upToDate';
    let attempt = 0;
    let attempts = 0;
    let epoch = this.epoch;
    const giveUp = (err: Error): Error => {
      const e = err as TcclError;
      this.conn?.send({
        t: 'stateDone', sync: run.sync, attempt, ok: false,
        code: (typeof e.code === 'string' ? e.code : 'INTERNAL').slice(0, 32), message: String(e.message).slice(0, 4000),
      });
      return err;
    };
    // The master's next word on this sync; a stateFail ends it for everyone.
    const nextMessage = async (): Promise<StateMsg> => {
      let m: StateMsg;
      try {
        m = await next();
      } catch (err) {
        throw giveUp(err as Error);
      }
      if (m.t === 'stateFail') throw errorFromCode(m.code, m.message);
      return m;
    };
    try {
      try {
        await this.waitReady(this.epoch, Infinity, 'waiting for the group to form', ac.signal);
      } catch (err) {
        throw stopped() ?? err;
      }
      report: for (;;) {
        let digest;
        try {
          digest = await hashState(state);
        } catch (err) {
          throw giveUp(err as Error);
        }
        const stop = stopped();
        if (stop) throw giveUp(stop);
        this.conn?.send({ t: 'stateReport', attempt, strategy, revision: digest.revision, entries: digest.entries });
        // Wait for the decision of this attempt (or a retry, or the sync failing for everyone).
        let m: StateMsg;
        for (;;) {
          m = await nextMessage();
          if (m.t === 'stateRetry') {
            if (m.attempt > attempt) {
              attempt = m.attempt;
              continue report;
            }
            continue;
          }
          if (m.t === 'stateDecision' && m.attempt === attempt) break;
        }
        const dm = m as StateDecisionMsg;
        const decision = dm.decision as SyncDecision;
        attempts++;
        const mine = decision.failures[this.id];
        if (mine) throw new StateError(mine.code, mine.message); // the master knows: it decided it
        let result: SyncResult | undefined;
        let retryable: Error | undefined;
        try {
          await this.waitReady(dm.epoch, Infinity, 'waiting for the group to form', ac.signal);
          if (this.epoch !== dm.epoch) throw this.superseded(dm.epoch);
          epoch = dm.epoch;
          result = await executeSyncPlan(this.engine, { self: this.id, members: this.members }, decision, state, {
            tag: dm.tag, timeoutMs: progressTimeoutMs, signal: ac.signal,
          });
        } catch (err) {
          const stop = stopped();
          if (stop) throw giveUp(stop);
          const e = err as TcclError & { peer?: string };
          if ((e instanceof TcclError && e.retryable) || this.epoch !== dm.epoch) {
            // A peer was lost during the transfer: nothing was written here; the master re-decides after the re-form.
            if (e instanceof PeerLostError && e.peer && this.epoch === dm.epoch) {
              this.log.warn('lost a peer during a shared-state sync; reporting it', { lost: e.peer, err: e });
              this.conn?.send({ t: 'lost', epoch: dm.epoch, peer: String(e.peer).slice(0, 300), message: e.message.slice(0, 4000) });
            }
            retryable = e;
          } else {
            throw giveUp(e);
          }
        }
        if (result) {
          total.bytesSent += result.bytesSent;
          total.bytesReceived += result.bytesReceived;
          total.rounds += result.rounds;
          total.retried.push(...result.retried);
          total.unresolved.push(...result.unresolved);
          for (const k of result.changedKeys) total.changed.add(k);
          timings.transferMs += result.timings.transferMs;
          timings.verifyMs += result.timings.verifyMs;
          timings.commitMs += result.timings.commitMs;
          if (result.role === 'receiver' || role !== 'receiver') role = result.role;
          this.conn?.send({ t: 'stateDone', sync: run.sync, attempt, ok: true });
        }
        // Wait for the commit (everyone done) or a retry.
        for (;;) {
          m = await nextMessage();
          if (m.t === 'stateRetry' && m.attempt > attempt) {
            this.log.info('shared-state sync restarts', { attempt: m.attempt, reason: m.reason, after: retryable?.message });
            attempt = m.attempt;
            continue report;
          }
          if (m.t === 'stateCommit' && result) {
            return {
              ...result,
              revision: state.revision,
              role,
              changedKeys: [...total.changed].sort(),
              bytesSent: total.bytesSent,
              bytesReceived: total.bytesReceived,
              rounds: total.rounds,
              retried: total.retried,
              unresolved: total.unresolved,
              timings,
              sync: m.sync,
              attempts,
              epoch,
            };
          }
        }
      }
    } finally {
      if (timer) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      if (run.sync !== undefined) this.lastSync = Math.max(this.lastSync, run.sync);
      if (this.stateSync === run) this.stateSync = undefined;
    }
  }

  /** Routes a shared-state message from the master to the sync in progress (stale ones are dropped). */
  private onStateMessage(m: StateMsg): void {
    const run = this.stateSync;
    if (!run || m.sync <= run.minSync && !(m.t === 'stateFail' && m.sync === 0)) return;
    if (run.sync === undefined && m.sync !== 0) run.sync = m.sync;
    if (m.sync !== 0 && m.sync !== run.sync) return;
    run.inbox.push(m);
    run.wake?.();
  }

  /** Leaves the group (the others re-form at once) and releases every socket. Idempotent. */
  async close(): Promise<void> {
    await this.shutdown(new ClosedError('The communicator was closed'), true);
  }

  // ---- internals: operations ----

  private checkUsable(): void {
    if (this.failure) throw this.failure;
  }

  /** Turns an engine failure into what the caller sees, and tells the master. */
  private opFailed(err: Error, epoch: number, key: string): Error {
    if (epoch !== this.epoch || this.failure) return this.failure ?? this.superseded(epoch, err);
    const e = err as TcclError & { peer?: string };
    if (e instanceof PeerLostError && e.peer) {
      this.log.warn('lost a peer during an operation; reporting it', { peer: this.id, lost: e.peer, op: key, err: e });
      this.conn?.send({ t: 'lost', epoch, peer: String(e.peer).slice(0, 300), message: e.message.slice(0, 4000) });
    } else {
      const code = typeof e.code === 'string' ? e.code.slice(0, 32) : 'INTERNAL';
      this.conn?.send({ t: 'fail', epoch, key, code, message: String(e.message).slice(0, 4000) });
    }
    return err;
  }

  private superseded(epoch: number, cause?: Error): PeerLostError {
    return new PeerLostError(
      `All-reduce aborted: group ${this.peerGroup} re-formed (epoch ${epoch} -> ${this.epoch}: ${this.ringReason}); retry`,
      undefined,
      { cause },
    );
  }

  private waitCommit(epoch: number, key: string, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        this.opWaiters.delete(key);
        this.conn?.send({ t: 'fail', epoch, key, code: 'ABORTED', message: 'aborted by AbortSignal' });
        reject(new AbortError(`All-reduce (${key}) aborted by AbortSignal`, { cause: signal?.reason }));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const cleanup = () => signal?.removeEventListener('abort', onAbort);
      this.opWaiters.set(key, {
        epoch,
        resolve: () => { cleanup(); resolve(); },
        reject: (e) => { cleanup(); reject(e); },
      });
      this.conn?.send({ t: 'done', epoch, key });
    });
  }

  private waitReady(epoch: number, deadline: number, what: string, signal?: AbortSignal): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.readyEpoch >= epoch && this.readyEpoch === this.epoch && !this.reconnecting) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const w = {
        epoch,
        resolve: () => { finish(); resolve(); },
        reject: (e: Error) => { finish(); reject(e); },
      };
      const onAbort = () => w.reject(new AbortError(`Aborted while ${what}`, { cause: signal?.reason }));
      const finish = () => {
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.readyWaiters = this.readyWaiters.filter((x) => x !== w);
      };
      if (deadline !== Infinity) {
        timer = setTimeout(() => w.reject(new TimeoutError(`Timed out ${what} (group ${this.peerGroup}, master ${this.masterHost}:${this.masterPort})`)), Math.max(0, deadline - Date.now()));
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      this.readyWaiters.push(w);
    });
  }

  /** Resolves when an epoch newer than `epoch` is ready, or at `deadline` (without error). */
  private async waitNewEpoch(epoch: number, deadline: number): Promise<void> {
    try {
      await this.waitReady(epoch + 1, deadline, 'waiting for the group to re-form');
    } catch (err) {
      if (!(err instanceof TimeoutError)) throw err;
    }
  }

  private wakeReady(): void {
    if (this.reconnecting || this.readyEpoch !== this.epoch) return;
    for (const w of [...this.readyWaiters]) if (w.epoch <= this.readyEpoch) w.resolve();
  }

  // ---- internals: control connection ----

  private openControl(deadline: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const socket = net.connect({ host: this.masterHost, port: this.masterPort });
      const conn = new Connection(socket);
      let timer: NodeJS.Timeout | undefined;
      const fail = (e: Error) => {
        if (timer) clearTimeout(timer);
        this.handshake = undefined;
        conn.close();
        reject(e);
      };
      if (deadline !== Infinity) {
        timer = setTimeout(
          () => fail(new TimeoutError(`Timed out connecting to the master at ${this.masterHost}:${this.masterPort}`)),
          Math.max(0, deadline - Date.now()),
        );
      }
      const nonce = makeNonce();
      this.handshake = {
        nonce, conn, stage: 'challenge',
        resolve: () => { if (timer) clearTimeout(timer); this.handshake = undefined; resolve(); },
        reject: fail,
      };
      conn.on('message', (m) => this.onMessage(conn, m));
      conn.on('close', (reason) => this.onClose(conn, reason));
      socket.once('connect', () => {
        conn.send({ t: 'hello', proto: PROTOCOL_NAME, version: PROTOCOL_VERSION, nonce, session: this.session?.id, secret: this.session?.secret });
      });
    });
  }

  private onHandshake(conn: Connection, raw: Record<string, unknown>): void {
    const hs = this.handshake!;
    if (hs.stage === 'challenge') {
      const m = validateMessage<Challenge | ErrorMsg>(raw, ['challenge', 'error']);
      if (m.t === 'error') return hs.reject(errorFromCode(m.code, `The master refused this peer: ${m.message}`));
      if (m.version !== PROTOCOL_VERSION) {
        return hs.reject(new ProtocolError(`The master speaks protocol version ${m.version}; this peer speaks ${PROTOCOL_VERSION}`));
      }
      if (m.auth && this.token === undefined) {
        return hs.reject(new AuthError('The master requires a run token: pass the "token" option or set TCCL_TOKEN'));
      }
      if (!m.auth && this.token !== undefined) {
        return hs.reject(new AuthError('This peer has a run token but the master does not use one: refusing to join a master that cannot prove it knows the token'));
      }
      hs.stage = 'welcome';
      conn.send({
        t: 'register',
        proof: this.token !== undefined ? peerProof(this.token, m.nonce, hs.nonce) : undefined,
        peerGroup: this.peerGroup,
        dataPort: this.engine.port,
        advertiseAddress: this.advertiseAddress,
        label: this.label,
      });
      (hs as { masterNonce?: Uint8Array }).masterNonce = m.nonce;
      return;
    }
    const m = validateMessage<Welcome | ErrorMsg>(raw, ['welcome', 'error']);
    if (m.t === 'error') return hs.reject(errorFromCode(m.code, `The master refused this peer: ${m.message}`));
    if (this.token !== undefined) {
      const expected = masterProof(this.token, hs.nonce, (hs as { masterNonce?: Uint8Array }).masterNonce!);
      if (!proofMatches(expected, m.proof)) return hs.reject(new AuthError('The master failed to prove it knows the run token'));
    }
    const old = this.conn;
    this.conn = conn;
    if (old && old !== conn) old.close();
    this.id = m.peer;
    this.session = { id: m.session, secret: m.secret };
    this.heartbeat = { intervalMs: m.heartbeatIntervalMs, timeoutMs: m.peerTimeoutMs };
    this.log = this.log.child(`peer ${m.peer}`);
    conn.startHeartbeat(m.heartbeatIntervalMs, m.peerTimeoutMs);
    this.log.debug(m.resumed ? 'reconnected to the master' : 'registered with the master', { observedHost: m.observedHost });
    hs.resolve();
    if (m.resumed) {
      // Whatever was sent while the connection was down is lost: say it again (the master ignores repeats).
      for (const [key, w] of this.opWaiters) if (w.epoch === this.epoch) conn.send({ t: 'done', epoch: w.epoch, key });
      for (const id of this.voteWaiters.keys()) conn.send({ t: 'vote', id });
    }
  }

  private onMessage(conn: Connection, raw: Record<string, unknown>): void {
    try {
      if (this.handshake && this.handshake.conn === conn) return this.onHandshake(conn, raw);
      if (conn !== this.conn || this.failure) return;
      const m = validateMessage<Ring | Ready | OpCommit | OpAbort | VoteResult | World | Dropped | ErrorMsg | StateMsg>(raw, [
        'ring', 'ready', 'opCommit', 'opAbort', 'voteResult', 'world', 'dropped', 'error',
        'stateDecision', 'stateRetry', 'stateCommit', 'stateFail',
      ]);
      switch (m.t) {
        case 'stateDecision': case 'stateRetry': case 'stateCommit': case 'stateFail':
          return this.onStateMessage(m);
        case 'ring': return this.onRing(m);
        case 'ready':
          if (m.epoch === this.epoch && m.epoch > this.readyEpoch) {
            this.readyEpoch = m.epoch;
            this.wakeReady();
          }
          return;
        case 'opCommit': {
          const w = this.opWaiters.get(m.key);
          if (w && w.epoch === m.epoch) {
            this.opWaiters.delete(m.key);
            w.resolve();
          }
          return;
        }
        case 'opAbort': {
          if (m.epoch !== this.epoch) return;
          const w = this.opWaiters.get(m.key);
          if (w && w.epoch === m.epoch) {
            this.opWaiters.delete(m.key);
            w.reject(errorFromCode(m.code, m.message));
          } else {
            this.earlyAborts.set(m.key, { code: m.code, message: m.message });
          }
          return;
        }
        case 'voteResult':
          this.voteWaiters.get(m.id)?.resolve(m);
          return;
        case 'world':
          this.world = { worldSize: m.worldSize, groupWorldSize: m.groupWorldSize, peerGroups: m.peerGroups, pending: m.pending };
          return;
        case 'dropped':
          this.log.error('dropped by the master', { reason: m.reason });
          void this.shutdown(new ClosedError(`This peer was dropped by the master: ${m.reason}. Create a new Communicator to rejoin`), false);
          return;
        case 'error':
          void this.shutdown(errorFromCode(m.code, `The master ended the session: ${m.message}`), false);
          return;
      }
    } catch (err) {
      this.log.error('protocol error from the master', { err });
      if (this.handshake && this.handshake.conn === conn) this.handshake.reject(err as Error);
      else void this.shutdown(err as Error, false);
    }
  }

  private onRing(m: Ring): void {
    if (m.epoch < this.epoch) return;
    if (m.epoch > this.epoch) {
      if (m.index >= m.peers.length) throw new ProtocolError(`Ring of epoch ${m.epoch} has no member at index ${m.index}`);
      this.engine.configure(m.epoch, m.index, m.peers, new Uint8Array(m.ticket));
      const old = this.epoch;
      this.epoch = m.epoch;
      this.ring = m.peers;
      this.ringReason = m.reason;
      this.tagUses = new Map();
      this.earlyAborts = new Map();
      this.log.info('installed ring', { epoch: m.epoch, index: m.index, size: m.peers.length, reason: m.reason });
      for (const [key, w] of [...this.opWaiters]) {
        if (w.epoch < m.epoch) {
          this.opWaiters.delete(key);
          w.reject(this.superseded(old));
        }
      }
    }
    this.conn?.send({ t: 'ack', epoch: m.epoch });
  }

  private onClose(conn: Connection, reason: Error | undefined): void {
    if (this.handshake && this.handshake.conn === conn) {
      this.handshake.reject(
        reason instanceof ProtocolError ? reason
          : new ClosedError(`The master at ${this.masterHost}:${this.masterPort} closed the connection during the handshake${reason ? `: ${reason.message}` : ''}`),
      );
      return;
    }
    if (conn !== this.conn || this.failure || this.closing) return;
    if (reason instanceof ProtocolError) {
      void this.shutdown(reason, false);
      return;
    }
    void this.reconnect(reason);
  }

  private async reconnect(reason: Error | undefined): Promise<void> {
    const why = reason ? reason.message : 'connection closed';
    this.log.warn('lost the master; reconnecting', { master: `${this.masterHost}:${this.masterPort}`, reason: why });
    this.reconnecting = true;
    const deadline = Date.now() + this.reconnectTimeoutMs;
    let delay = 100;
    let last: Error | undefined = reason;
    while (!this.failure && Date.now() < deadline) {
      try {
        await this.openControl(Math.min(deadline, Date.now() + this.heartbeat.timeoutMs));
        this.reconnecting = false;
        this.wakeReady();
        return;
      } catch (err) {
        last = err as Error;
        if (err instanceof AuthError || err instanceof ProtocolError || (err instanceof ClosedError && /refused this peer/.test(err.message))) break;
      }
      await new Promise((r) => setTimeout(r, Math.min(delay, Math.max(0, deadline - Date.now()))));
      delay = Math.min(delay * 2, 2000);
    }
    if (this.failure) return;
    const err =
      last instanceof ClosedError || last instanceof AuthError
        ? last
        : new ClosedError(
            `Lost the master at ${this.masterHost}:${this.masterPort} (${why}) and could not reconnect within ${this.reconnectTimeoutMs} ms${last && last !== reason ? `: ${last.message}` : ''}`,
          );
    this.log.error('giving up on the master', { err });
    await this.shutdown(err, false);
  }

  /** Fails everything pending with `err`, tells the master goodbye if asked, and releases the engine. */
  private async shutdown(err: Error, sayBye: boolean): Promise<void> {
    if (this.failure) {
      if (sayBye) await this.engine.close().catch(() => undefined);
      return;
    }
    this.failure = err;
    this.closing = true;
    if (this.handshake) this.handshake.reject(err);
    for (const w of [...this.readyWaiters]) w.reject(err);
    for (const [, w] of this.opWaiters) w.reject(err);
    this.opWaiters.clear();
    for (const [, w] of this.voteWaiters) w.reject(err);
    this.voteWaiters.clear();
    this.stateSync?.wake?.();
    const conn = this.conn;
    if (conn && !conn.isClosed) {
      if (sayBye) conn.sendAndClose({ t: 'bye' });
      else conn.close();
    }
    await this.engine.close().catch(() => undefined);
  }
}

function scratchKey(a: TensorArray): string {
  return `${a.constructor.name}:${a.length}`;
}

/** Large copies run on a native worker thread so they never stall the event loop; small ones inline. */
const INLINE_COPY_BYTES = 256 * 1024;
async function copyInto(dst: TensorArray, src: TensorArray): Promise<void> {
  if (dst.byteLength <= INLINE_COPY_BYTES) dst.set(src as never);
  else await native().copyAsync(dst, src);
}

async function createEngine(options: { host: string; port: number; connections?: number }): Promise<Engine> {
  const { Engine: RealEngine } = await import('../engine');
  return RealEngine.create(options);
}
