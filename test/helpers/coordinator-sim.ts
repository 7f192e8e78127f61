// Drives the master's state machine (lib/master/coordinator.ts) in-process: a fake clock, one inbox per peer,
// and the peers' side of the protocol reduced to what a test needs to say.
import { Coordinator, CoordinatorOptions } from '../../lib/master/coordinator';
import type { MasterMsg, Msg, PeerMsg, ResumeReport } from '../../lib/protocol';
import type { EntryDigest } from '../../lib/shared-state/hash';
import { solveRing } from '../../lib/topology/solver';

export type Kind = MasterMsg['t'];

export class Sim {
  now = 1_000_000;
  readonly core: Coordinator;
  /** Messages each peer received and the test has not taken yet. */
  readonly inbox = new Map<string, MasterMsg[]>();
  /** Peers the master dropped, with the reason. */
  readonly dropped = new Map<string, string>();
  /** The newest ring epoch each peer was sent (what it installs and acknowledges). */
  private readonly rings = new Map<string, number>();
  private ticket = 0;
  /** Solve requests not answered yet (with `autoSolve` off). */
  readonly solves: Extract<ReturnType<Coordinator['apply']>[number], { type: 'solve' }>[] = [];
  /** Answer solve requests at once with the real solver (as the master's worker thread would, later). */
  autoSolve = true;

  constructor(options: CoordinatorOptions = {}) {
    this.core = new Coordinator({
      now: () => this.now,
      random: (n) => new Uint8Array(n).fill(++this.ticket & 0xff),
      voteTimeoutMs: 5000,
      ackTimeoutMs: 1000,
      ...options,
    });
  }

  private run(effects: ReturnType<Coordinator['apply']>): void {
    const solves: typeof this.solves = [];
    for (const e of effects) {
      if (e.type === 'solve') {
        solves.push(e);
        continue;
      }
      if (e.type === 'drop') {
        this.dropped.set(e.peer, e.reason);
        continue;
      }
      if (e.msg.t === 'ring') this.rings.set(e.to, e.msg.epoch);
      if (!this.inbox.has(e.to)) this.inbox.set(e.to, []);
      this.inbox.get(e.to)!.push(e.msg);
    }
    if (!this.autoSolve) this.solves.push(...solves);
    else for (const job of solves) this.solve(job);
  }

  /** Answers one solve request with the real solver. */
  solve(job: (typeof this.solves)[number]): void {
    try {
      this.run(this.core.apply({ type: 'solved', group: job.group, round: job.round, solution: solveRing(job.matrix, job.options) }));
    } catch (err) {
      this.run(this.core.apply({ type: 'solved', group: job.group, round: job.round, error: (err as Error).message }));
    }
  }

  /** A peer registers with group `group`; returns its id. */
  join(group = 0, port = 4000, autoAdmit?: boolean): string {
    const id = this.core.newPeerId();
    this.inbox.set(id, []);
    this.run(this.core.apply({ type: 'join', peer: id, group, host: '127.0.0.1', port, autoAdmit }));
    return id;
  }

  /** A peer this coordinator does not know resumes its session with a report (a restarted master). */
  rejoin(peer: string, report: ResumeReport, group = 0, port = 4000): string | undefined {
    const r = { peer, group, host: '127.0.0.1', port, report };
    const bad = this.core.checkRejoin(r);
    if (bad) return bad;
    this.inbox.set(peer, []);
    this.run(this.core.apply({ type: 'rejoin', ...r }));
    return undefined;
  }

  say(peer: string, msg: PeerMsg): void {
    this.run(this.core.apply({ type: 'message', peer, msg }));
  }

  /** A known peer's control connection was replaced (a reconnect): the master says again what it may have missed. */
  resume(peer: string): void {
    this.run(this.core.apply({ type: 'resume', peer }));
  }

  lose(peer: string, reason = 'control connection closed'): void {
    this.run(this.core.apply({ type: 'lost', peer, reason }));
  }

  /** Moves the clock and lets the coordinator act on its deadlines. */
  /** The peer's heartbeat says its JavaScript thread has been busy for `ms` (0: not any more). */
  busy(peer: string, ms: number): void {
    this.run(this.core.apply({ type: 'busy', peer, ms }));
  }

  advance(ms: number): void {
    this.now += ms;
    this.run(this.core.apply({ type: 'tick' }));
  }

  /** Takes (removes) the messages of kind `t` a peer received, in order. */
  take<K extends Kind>(peer: string, t: K): Msg<K>[] {
    const all = this.inbox.get(peer) ?? [];
    const mine = all.filter((m) => m.t === t) as Msg<K>[];
    this.inbox.set(peer, all.filter((m) => m.t !== t));
    return mine;
  }

  /** The kinds of the messages a peer has received and not taken, in order (world views left out). */
  kinds(peer: string): Kind[] {
    return (this.inbox.get(peer) ?? []).filter((m) => m.t !== 'world').map((m) => m.t);
  }

  /** Every listed peer acknowledges the newest ring it was sent (as a communicator does at once). */
  ack(...peers: string[]): void {
    for (const p of peers) {
      const epoch = this.rings.get(p);
      if (epoch === undefined) throw new Error(`${p} received no ring to acknowledge`);
      this.take(p, 'ring');
      this.say(p, { t: 'ack', epoch });
    }
  }

  /** Forms a group of n peers (the first starts it, one vote accepts the others); returns their ids. */
  group(n: number, group = 0, autoAdmit?: boolean): string[] {
    const first = this.join(group, 4000, autoAdmit);
    this.ack(first);
    const rest = Array.from({ length: n - 1 }, (_, i) => this.join(group, 4001 + i, autoAdmit));
    if (rest.length) {
      this.say(first, { t: 'vote', id: 1 });
      this.ack(first, ...rest);
      this.take(first, 'voteResult');
    }
    for (const p of [first, ...rest]) this.inbox.set(p, []);
    return [first, ...rest];
  }

  epoch(group = 0): number {
    return this.core.groupsInfo().find((g) => g.peerGroup === group)!.epoch;
  }

  /** The last world view a peer received. */
  world(peer: string): Msg<'world'> | undefined {
    const w = this.take(peer, 'world');
    return w[w.length - 1];
  }
}

/** A state digest report: every entry float32 of `bytes` bytes, hashed as `hash`. */
export function report(attempt: number, revision: number, hashes: Record<string, string>, strategy: Msg<'stateReport'>['strategy'] = 'enforcePopular'): Msg<'stateReport'> {
  const entries: Record<string, EntryDigest> = {};
  for (const [k, h] of Object.entries(hashes)) entries[k] = { hash: h, byteLength: 64 << 20, dtype: 'float32' };
  return { t: 'stateReport', attempt, strategy, revision, entries };
}
