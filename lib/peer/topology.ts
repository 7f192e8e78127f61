/**
 * The peer's half of `optimizeTopology()`: measure this peer's links in the current epoch (lib/topology/
 * measure.ts), report them to the master, and wait for its answer: the same `topoResult` for every member,
 * sent before the new ring when the order changes, so that this re-form is told apart from a loss. Any other
 * new ring while waiting (a peer was lost) fails the call as superseded: retryable, the group keeps its order.
 */
import { InvalidArgumentError, PeerLostError, ProtocolError, TimeoutError, errorFromCode } from '../errors';
import type { Msg, WireMatrix } from '../protocol';
import { measureLinks } from '../topology/measure';
import { DEFAULT_SOLVE_BYTES } from '../topology/solver';
import { checkInt } from '../validate';
import type { PeerContext } from './context';
import type { Membership } from './membership';
import { monotonicMs } from '../clock';

export interface OptimizeTopologyOptions {
  /** Size of the all-reduce to optimise the ring for, bytes (default 64 MiB). */
  bytes?: number;
  /**
   * Apply the new order only if it is predicted faster by more than this fraction (default 0.2: a re-form costs an
   * epoch, and measurements on a busy host scatter by 10-20%).
   */
  minGain?: number;
  /** Largest link probe per direction, bytes (default 32 MiB); smaller on slow links (about 0.25 s each). */
  maxProbeBytes?: number;
  /** Deadline of the whole call, ms (default 120000). */
  timeoutMs?: number;
  /**
   * Re-measure only pairs the master has no measurement of, or one older than this, ms (default: measure every
   * pair). After a newcomer was voted in, `{ maxAgeMs: 600_000 }` measures just its links and places it.
   */
  maxAgeMs?: number;
}

export interface OptimizeTopologyResult {
  /** Whether the new order was installed (the group re-formed into `epoch`). */
  applied: boolean;
  /** The epoch after the call. */
  epoch: number;
  /** Ring order before and after, by master ids (equal when not applied). */
  oldOrder: string[];
  newOrder: string[];
  /** Predicted all-reduce time of `bytes` in the old and the new order, ms. */
  predictedBeforeMs: number;
  predictedAfterMs: number;
  /**
   * The group's links: bandwidth bytes/s and RTT ms from peers[i] to peers[j], and how old each is. Undefined for a
   * group of more than 128 members (3 x N x N numbers to every member would be gigabytes at 1,000; docs/protocol.md).
   */
  matrix?: WireMatrix;
  /** Whether the new order is proven optimal (exact search) under the model. */
  exact: boolean;
  solveMs: number;
  /** This peer's measuring: time and bytes it sent. */
  measureMs: number;
  measureBytes: number;
}

export interface TopologyHost extends PeerContext {
  membership: Membership;
  /** This peer's master id. */
  id(): string;
}

const DEFAULT_TIMEOUT_MS = 120_000;

export class TopologyClient {
  private waiter?: { resolve: (m: Msg<'topoResult' | 'topoPlan'>) => void; reject: (e: Error) => void };
  /** Calls in the current epoch (part of the measurement tags). */
  private calls = 0;
  private busy = false;

  constructor(private readonly host: TopologyHost) {
    host.membership.onNewEpoch((_epoch, old) => {
      this.calls = 0;
      const w = this.waiter;
      this.waiter = undefined;
      w?.reject(host.membership.superseded(old, 'optimizeTopology'));
    });
  }

  onMessage(m: Msg<'topoResult' | 'topoPlan'>): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.resolve(m);
  }

  failAll(err: Error): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(err);
  }

  async optimize(options: OptimizeTopologyOptions = {}): Promise<OptimizeTopologyResult> {
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('Expected optimizeTopology options { bytes, minGain, timeoutMs }');
    const bytes = checkInt('bytes', options.bytes ?? DEFAULT_SOLVE_BYTES, 1);
    const minGain = options.minGain ?? 0.2;
    if (typeof minGain !== 'number' || !(minGain >= 0 && minGain < 1)) {
      throw new InvalidArgumentError(`Expected "minGain" to be a number from 0 to below 1 (a fraction of the predicted time), got ${String(minGain)}`);
    }
    const maxProbeBytes = checkInt('maxProbeBytes', options.maxProbeBytes ?? 32 << 20, 1 << 20, 256 << 20);
    const timeoutMs = checkInt('timeoutMs', options.timeoutMs ?? DEFAULT_TIMEOUT_MS, 1, 2 ** 31 - 1);
    const maxAgeMs = options.maxAgeMs === undefined ? undefined : checkInt('maxAgeMs', options.maxAgeMs, 0);
    if (this.busy) throw new InvalidArgumentError('optimizeTopology is already running on this peer: await the first call');
    const failure = this.host.failure();
    if (failure) throw failure;
    this.busy = true;
    try {
      return await this.run(bytes, minGain, maxProbeBytes, maxAgeMs, monotonicMs() + timeoutMs);
    } finally {
      this.busy = false;
    }
  }

  /** Sends `m` and waits for the master's next topology message (plan or result), or a new ring, or the deadline. */
  private ask(m: Msg<'topoStart' | 'topoReport'>, deadline: number): Promise<Msg<'topoResult' | 'topoPlan'>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new TimeoutError(`optimizeTopology: no answer from the master for group ${this.host.peerGroup} before the deadline`));
      }, Math.max(0, deadline - monotonicMs()));
      this.waiter = {
        resolve: (x) => { clearTimeout(timer); resolve(x); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
      this.host.send(m);
    });
  }

  private async run(bytes: number, minGain: number, maxProbeBytes: number, maxAgeMs: number | undefined, deadline: number): Promise<OptimizeTopologyResult> {
    const { membership } = this.host;
    await membership.waitReady(membership.epoch, deadline, 'waiting for the group before measuring its links');
    const epoch = membership.epoch;
    const ids = membership.members;
    const me = ids.indexOf(this.host.id());
    const call = this.calls++;
    const log = this.host.log();
    let only: Set<string> | undefined;
    if (maxAgeMs !== undefined) {
      const plan = await this.ask({ t: 'topoStart', epoch, maxAgeMs }, deadline);
      if (plan.t === 'topoResult') {
        throw errorFromCode(plan.code ?? 'INTERNAL', plan.message ?? 'optimizeTopology failed before measuring');
      }
      only = new Set();
      for (let k = 0; k < plan.pairs.length; k += 2) only.add(`${plan.pairs[k]},${plan.pairs[k + 1]}`);
    }
    let measured;
    try {
      measured = await measureLinks(this.host.dataPlane, me, ids.length, { deadline, maxProbeBytes, call, only });
    } catch (err) {
      const failure = this.host.failure();
      if (failure) throw failure;
      if (membership.epoch !== epoch) throw membership.superseded(epoch, 'optimizeTopology', err as Error);
      const e = err as Error & { code?: string; peer?: string };
      if (e instanceof PeerLostError && e.peer) {
        log.warn('lost a peer while measuring links; reporting it', { lost: e.peer, err: e });
        this.host.send({ t: 'lost', epoch, peer: String(e.peer).slice(0, 300), message: e.message.slice(0, 4000) });
      } else {
        const code = typeof e.code === 'string' ? e.code.slice(0, 32) : 'INTERNAL';
        this.host.send({ t: 'topoReport', epoch, bytes, minGain, links: [], measureMs: 0, measureBytes: 0, code, message: String(e.message).slice(0, 4000) });
      }
      throw err;
    }
    if (membership.epoch !== epoch) throw membership.superseded(epoch, 'optimizeTopology');
    log.debug('measured links', { links: measured.links.length, ms: Math.round(measured.ms), bytes: measured.bytesSent });
    const result = await this.ask({
      t: 'topoReport', epoch, bytes, minGain, measureMs: Math.round(measured.ms), measureBytes: measured.bytesSent,
      links: measured.links.map((l) => ({ to: ids[l.to], bytesPerSec: l.bytesPerSec, rttMs: l.rttMs })),
    }, deadline);
    if (result.t !== 'topoResult') throw new ProtocolError('optimizeTopology: the master sent a plan where a result was expected');
    if (!result.ok) throw errorFromCode(result.code ?? 'INTERNAL', result.message ?? 'optimizeTopology failed');
    if (result.applied) await membership.waitReady(result.epoch, deadline, 'installing the optimised ring');
    return {
      applied: result.applied, epoch: membership.epoch, oldOrder: result.oldOrder, newOrder: result.newOrder,
      predictedBeforeMs: result.predictedBeforeMs, predictedAfterMs: result.predictedAfterMs, matrix: result.matrix,
      exact: result.exact, solveMs: result.solveMs, measureMs: measured.ms, measureBytes: measured.bytesSent,
    };
  }
}
