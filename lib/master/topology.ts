/**
 * The master's half of `optimizeTopology()` for one group: it keeps the group's link matrix (each directed pair
 * with the time it was measured), collects every member's `topoReport` of the current epoch, asks for the ring
 * order to be solved (an effect: the socket server runs the solver in a worker thread and answers with a
 * `solved` event), and installs the new order by re-forming the group when the predicted gain is above the
 * members' threshold. Every member gets the same `topoResult`, sent before the new `ring` so that a member can
 * tell this re-form from a loss. A re-form for any other reason (a peer lost) ends the round: the members'
 * calls fail as superseded (retryable) and the group carries on in its order. See docs/topology.md.
 */
import type { Msg, WireMatrix } from '../protocol';
import type { Solution } from '../topology/solver';
import type { GroupContext, Peer } from './context';

/** What the topology round needs of its group. */
/** Largest group whose `topoResult` carries the link matrix (3 x 128 x 128 numbers: about 440 KiB of msgpack). */
export const MATRIX_MAX_PEERS = 128;

export interface TopologyHost {
  readonly id: number;
  readonly epoch: number;
  readonly members: readonly Peer[];
  readonly reforming: boolean;
  /** Re-forms the group with the same members in `order`. */
  reorder(order: Peer[], reason: string): void;
}

interface Round {
  id: number;
  epoch: number;
  reports: Map<string, Msg<'topoReport'>>;
  /** Members that asked for a plan (optimizeTopology with maxAgeMs), with their maxAgeMs. */
  starts: Map<string, number>;
  plan?: Msg<'topoPlan'>;
  deadline: number;
  /** Set once the round is decided (answered to every reporter, also to late ones). */
  result?: Msg<'topoResult'>;
  solving: boolean;
  /** The member order the solver was given. */
  order?: Peer[];
  matrix?: WireMatrix;
}

interface Measured {
  bytesPerSec: number;
  rttMs: number;
  at: number;
}

export class GroupTopology {
  /** from -> to -> last measurement. */
  private readonly links = new Map<string, Map<string, Measured>>();
  private round?: Round;
  private rounds = 0;

  constructor(private readonly group: TopologyHost, private readonly ctx: GroupContext) {}

  get deadline(): number | undefined {
    return this.round && !this.round.result && !this.round.solving ? this.round.deadline : undefined;
  }

  /** The stored matrix over the current members (age in ms since each pair was measured; 0 = never). */
  matrix(members: readonly Peer[] = this.group.members): WireMatrix {
    const now = this.ctx.now();
    const peers = members.map((p) => p.id);
    const cell = (a: string, b: string) => (a === b ? undefined : this.links.get(a)?.get(b));
    return {
      peers,
      bandwidth: peers.map((a) => peers.map((b) => cell(a, b)?.bytesPerSec ?? 0)),
      rttMs: peers.map((a) => peers.map((b) => cell(a, b)?.rttMs ?? 0)),
      ageMs: peers.map((a) => peers.map((b) => {
        const c = cell(a, b);
        return c ? now - c.at : 0;
      })),
    };
  }

  /** A member asks which pairs to measure: those missing or older than `maxAgeMs`, once every member asked. */
  onStart(p: Peer, m: Msg<'topoStart'>): void {
    const g = this.group;
    if (!p.member || m.epoch !== g.epoch) return;
    let r = this.round;
    if (!r || r.epoch !== g.epoch || r.result) r = this.newRound();
    if (r.plan) {
      this.sendPlan(p, r.plan);
      return;
    }
    r.starts.set(p.id, m.maxAgeMs);
    if (!g.members.every((q) => r.starts.has(q.id))) return;
    const maxAge = Math.min(...r.starts.values());
    const { ageMs, bandwidth } = this.matrix();
    const pairs: number[] = [];
    const stale = (i: number, j: number) => !(bandwidth[i][j] > 0) || ageMs[i][j] > maxAge;
    for (let i = 0; i < g.members.length; i++) for (let j = i + 1; j < g.members.length; j++) if (stale(i, j) || stale(j, i)) pairs.push(i, j);
    r.plan = { t: 'topoPlan', epoch: g.epoch, pairs };
    this.ctx.feed.emit('debug', 'topology plan', { group: g.id, pairs: pairs.length / 2, maxAgeMs: maxAge });
    for (const q of g.members) this.sendPlan(q, r.plan);
  }

  onReport(p: Peer, m: Msg<'topoReport'>): void {
    const g = this.group;
    if (!p.member || m.epoch !== g.epoch) return; // superseded: the member learns it from the new ring
    let r = this.round;
    // A new round unless one of this epoch is open, or decided without this member (it reports late: it gets
    // the same answer). A member that already had its answer is calling again.
    if (!r || r.epoch !== g.epoch || (r.result && r.reports.has(p.id))) r = this.newRound();
    if (r.result) {
      this.ctx.send(p, r.result);
      return;
    }
    r.reports.set(p.id, m);
    const now = this.ctx.now();
    for (const l of m.links) {
      if (!(l.bytesPerSec > 0)) continue;
      let row = this.links.get(p.id);
      if (!row) this.links.set(p.id, (row = new Map()));
      row.set(l.to, { bytesPerSec: l.bytesPerSec, rttMs: l.rttMs, at: now });
    }
    if (m.code !== undefined) {
      this.finish(r, { ok: false, code: m.code, message: `link measurement failed on ${p.id}: ${m.message ?? m.code}` });
      return;
    }
    this.ctx.feed.emit('debug', 'topology report', { peer: p.id, group: g.id, reports: r.reports.size, members: g.members.length });
    this.checkComplete(r);
  }

  /** The solver answered (or failed) for round `id`. */
  onSolved(id: number, solution: Solution | undefined, error: string | undefined): void {
    const r = this.round;
    if (!r || r.id !== id || r.result || !r.solving) return;
    r.solving = false;
    const g = this.group;
    if (r.epoch !== g.epoch || g.reforming) return; // a re-form ended the round; members were told by the ring
    if (!solution) {
      this.finish(r, { ok: false, code: 'INTERNAL', message: `the topology solver failed: ${error}` });
      return;
    }
    const minGain = Math.max(...[...r.reports.values()].map((x) => x.minGain));
    const order = r.order!;
    const gain = solution.currentMs > 0 ? 1 - solution.predictedMs / solution.currentMs : 0;
    const changed = solution.order.some((x, i) => x !== i);
    const apply = changed && gain > minGain;
    const newOrder = apply ? solution.order.map((i) => order[i]) : order;
    const fields = {
      group: g.id, epoch: g.epoch, beforeMs: Math.round(solution.currentMs), afterMs: Math.round(solution.predictedMs),
      gain: gain.toFixed(3), minGain, solveMs: Math.round(solution.solveMs), exact: solution.exact,
    };
    this.ctx.feed.emit('info', apply ? 'topology optimised: applying the new ring order' : 'topology optimised: order kept', {
      ...fields, order: newOrder.map((q) => q.id).join(','),
    });
    this.finish(r, {
      ok: true, applied: apply, oldOrder: order.map((q) => q.id), newOrder: newOrder.map((q) => q.id),
      predictedBeforeMs: solution.currentMs, predictedAfterMs: apply ? solution.predictedMs : solution.currentMs,
      exact: solution.exact, solveMs: solution.solveMs, epoch: apply ? g.epoch + 1 : g.epoch,
    });
    if (apply) g.reorder(newOrder, `topology optimised: predicted ${fields.beforeMs} -> ${fields.afterMs} ms per all-reduce`);
  }

  /** A member's control connection came back: the answer it may have missed is said again. */
  resumed(p: Peer): void {
    const r = this.round;
    if (r?.result && r.epoch === this.group.epoch && r.reports.has(p.id)) this.ctx.send(p, r.result);
  }

  /** A peer left: its links go. */
  forget(id: string): void {
    this.links.delete(id);
    for (const row of this.links.values()) row.delete(id);
  }

  /** Any re-form ends an open round (its members fail as superseded and retry). */
  onReform(): void {
    if (this.round && !this.round.result) this.round = undefined;
  }

  tick(now: number): void {
    const r = this.round;
    if (!r || r.result || r.solving || now < r.deadline) return;
    const missing = this.group.members.filter((q) => !r.reports.has(q.id)).map((q) => q.id);
    this.finish(r, { ok: false, code: 'TIMEOUT', message: `optimizeTopology timed out after ${this.ctx.voteTimeoutMs} ms: ${missing.join(', ')} did not report` });
  }

  private newRound(): Round {
    this.round = {
      id: ++this.rounds, epoch: this.group.epoch, reports: new Map(), starts: new Map(), deadline: this.ctx.now() + this.ctx.voteTimeoutMs, solving: false,
    };
    return this.round;
  }

  private checkComplete(r: Round): void {
    const g = this.group;
    if (g.reforming || r.solving || !g.members.every((q) => r.reports.has(q.id))) return;
    const order = [...g.members];
    const matrix = this.matrix(order);
    if (order.length < 2) {
      const ids = order.map((q) => q.id);
      this.finish(r, { ok: true, oldOrder: ids, newOrder: ids, exact: true });
      return;
    }
    const missing: string[] = [];
    for (let i = 0; i < order.length; i++) {
      for (let j = 0; j < order.length; j++) if (i !== j && !(matrix.bandwidth[i][j] > 0)) missing.push(`${order[i].id}->${order[j].id}`);
    }
    if (missing.length > 0) {
      this.finish(r, { ok: false, code: 'INTERNAL', message: `no measurement of ${missing.slice(0, 8).join(', ')}${missing.length > 8 ? ', ...' : ''}` });
      return;
    }
    r.solving = true;
    r.order = order;
    r.matrix = matrix;
    const bytes = Math.max(...[...r.reports.values()].map((x) => x.bytes));
    this.ctx.solve({ group: g.id, round: r.id, matrix: { bandwidth: matrix.bandwidth, rttMs: matrix.rttMs }, options: { bytes, current: order.map((_, i) => i) } });
  }

  /**
   * A member's part of the plan: only the pairs it belongs to (all it measures), so that a plan's frame grows with
   * the group, not with its square (a whole plan of 1,000 members is megabytes, and goes to every member).
   */
  private sendPlan(p: Peer, plan: Msg<'topoPlan'>): void {
    const me = this.group.members.indexOf(p);
    const pairs: number[] = [];
    for (let k = 0; k < plan.pairs.length; k += 2) if (plan.pairs[k] === me || plan.pairs[k + 1] === me) pairs.push(plan.pairs[k], plan.pairs[k + 1]);
    this.ctx.send(p, { ...plan, pairs });
  }

  private finish(r: Round, result: Partial<Msg<'topoResult'>> & { ok: boolean }): void {
    const full: Msg<'topoResult'> = {
      t: 'topoResult', epoch: this.group.epoch, applied: false, oldOrder: [], newOrder: [], predictedBeforeMs: 0, predictedAfterMs: 0,
      exact: false, solveMs: 0, ...result,
    };
    // The matrix is 3 x N x N numbers, sent to each of N members: beyond MATRIX_MAX_PEERS it stays on the master.
    if (this.group.members.length <= MATRIX_MAX_PEERS) full.matrix = r.matrix ?? this.matrix();
    else delete full.matrix;
    r.result = full;
    for (const q of this.group.members) if (r.reports.has(q.id) || r.starts.has(q.id)) this.ctx.send(q, full);
  }
}
