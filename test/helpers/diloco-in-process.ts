/**
 * An in-process group that implements {@link Collective} for N simulated peers in one process: all-reduce is an
 * exact average (float64 accumulation, one result copied to every member), the shared-state sync copies the most
 * popular state, and members can join or be killed. It exists to test and explain the optimizers' logic without a
 * network; training across processes or machines uses the real Communicator.
 */
import type { Collective, CollectiveAllReduceOptions, CollectiveAllReduceResult, CollectiveSyncResult, PlainState, SyncStrategy } from '../../lib/diloco/types';

/** Error the in-process group uses for a lost member (retryable, like PeerLostError). */
export class SimulatedPeerLostError extends Error {
  readonly code = 'PEER_LOST';
  readonly retryable = true;
}

interface Op {
  kind: string;
  arrivals: Map<InProcessMember, { data?: unknown; strategy?: SyncStrategy; resolve: (v: unknown) => void; reject: (e: Error) => void }>;
}

/** A group of simulated peers. */
export class InProcessGroup {
  /** Accepted members, in ring order. */
  readonly members: InProcessMember[] = [];
  readonly pending: InProcessMember[] = [];
  private ops = new Map<string, Op>();
  /** Bumped by every kill; survivors re-form (without admitting anyone) when they call updateTopology. */
  epoch = 0;

  /** `sharedState: false` hides syncSharedState, so the optimizers use their all-reduce fallback. */
  constructor(readonly options: { sharedState?: boolean } = {}) {}

  /**
   * Creates a member; with `accept` (default: while the group is empty) it is in the group at once, otherwise it
   * waits (see `member.accepted`) until the members call updateTopology.
   */
  join(accept = this.members.length === 0): InProcessMember {
    const m = new InProcessMember(this);
    if (accept) {
      this.members.push(m);
      m.admit();
    } else this.pending.push(m);
    return m;
  }

  /** Creates `n` accepted members. */
  static create(n: number, options: { sharedState?: boolean } = {}): { group: InProcessGroup; members: InProcessMember[] } {
    const group = new InProcessGroup(options);
    const members = Array.from({ length: n }, () => group.join(true));
    return { group, members };
  }

  /** Kills a member: every operation in progress fails with a retryable error on the survivors. */
  kill(m: InProcessMember): void {
    const i = this.members.indexOf(m);
    if (i >= 0) this.members.splice(i, 1);
    m.dead = true;
    this.epoch++;
    for (const [key, op] of this.ops) {
      this.ops.delete(key);
      for (const [member, a] of op.arrivals) {
        a.reject(member === m ? new Error('killed') : new SimulatedPeerLostError(`peer lost during ${op.kind}`));
      }
    }
  }

  /** @internal */
  arrive(m: InProcessMember, kind: string, key: string, data: unknown, strategy?: SyncStrategy): Promise<unknown> {
    if (m.dead) return Promise.reject(new Error('this member was killed'));
    return new Promise((resolve, reject) => {
      let op = this.ops.get(key);
      if (!op) this.ops.set(key, (op = { kind, arrivals: new Map() }));
      op.arrivals.set(m, { data, strategy, resolve, reject });
      const participants = this.members;
      if (participants.every((p) => op!.arrivals.has(p))) {
        this.ops.delete(key);
        // settle on a later tick so callers see ordinary asynchronous behaviour
        setImmediate(() => this.complete(kind, op!));
      }
    });
  }

  private complete(kind: string, op: Op): void {
    const arrivals = [...op.arrivals];
    if (kind.startsWith('allReduce')) {
      const inputs = arrivals.map(([, a]) => a.data as Float32Array);
      const n = inputs[0].length;
      if (inputs.some((x) => x.length !== n)) {
        for (const [, a] of arrivals) a.reject(new Error('mismatched all-reduce sizes'));
        return;
      }
      const out = new Float32Array(n);
      const op = kind.slice('allReduce:'.length);
      // A weighted average (`weight` rides on each input): sum(w x) / sum(w), in float64.
      const weights = inputs.map((x) => (x as { weight?: number }).weight);
      const weighted = op === 'avg' && weights.every((w) => w !== undefined);
      const total = weights.reduce((s: number, w) => s + (w ?? 0), 0);
      for (let i = 0; i < n; i++) {
        let s = op === 'max' ? -Infinity : 0;
        inputs.forEach((x, p) => (s = op === 'max' ? Math.max(s, x[i]) : s + (weighted ? weights[p]! * x[i] : x[i])));
        out[i] = op === 'avg' ? s / (weighted ? total : inputs.length) : s;
      }
      for (const [, a] of arrivals) {
        (a.data as Float32Array).set(out);
        a.resolve({ worldSize: inputs.length, bytes: n * 4 });
      }
    } else if (kind === 'sync') {
      // most popular (revision, content) among peers that offer their state
      const offers = arrivals.filter(([, a]) => a.strategy !== 'receiveOnly');
      if (offers.length === 0) {
        for (const [, a] of arrivals) a.reject(new Error('no peer offers its shared state'));
        return;
      }
      const keyOf = (s: PlainState) =>
        `${s.revision}|` + Object.keys(s.entries).sort().map((k) => `${k}:${Buffer.from(s.entries[k].buffer, s.entries[k].byteOffset, s.entries[k].byteLength).toString('base64')}`).join(',');
      const counts = new Map<string, { n: number; s: PlainState }>();
      for (const [, a] of offers) {
        const s = a.data as PlainState;
        const k = keyOf(s);
        const c = counts.get(k) ?? { n: 0, s };
        c.n++;
        counts.set(k, c);
      }
      const best = [...counts.values()].sort((x, y) => y.n - x.n)[0].s;
      for (const [, a] of arrivals) {
        const s = a.data as PlainState;
        let received = 0;
        if (s !== best) {
          for (const k of Object.keys(best.entries)) {
            if (keyOf({ revision: 0, entries: { k: s.entries[k] } }) !== keyOf({ revision: 0, entries: { k: best.entries[k] } })) {
              s.entries[k].set(best.entries[k]);
              received += best.entries[k].byteLength;
            }
          }
          s.revision = best.revision;
        }
        a.resolve({ revision: s.revision, bytesReceived: received, bytesSent: 0 });
      }
    } else {
      const admitted = this.pending.splice(0);
      if (admitted.length > 0) this.epoch++;
      this.members.push(...admitted);
      for (const m of admitted) m.admit();
      for (const [, a] of arrivals) a.resolve(undefined);
    }
  }
}

/** One simulated peer: a {@link Collective} over {@link PlainState}. */
export class InProcessMember implements Collective<PlainState> {
  dead = false;
  /** Resolves when the member is in the group (at once for accepted ones; after a vote for pending ones). */
  readonly accepted: Promise<void>;
  private admitted!: () => void;
  private epochSeen = -1;
  private counters = new Map<string, number>();

  constructor(readonly group: InProcessGroup) {
    this.accepted = new Promise((r) => (this.admitted = r));
    if (group.options.sharedState === false) (this as { syncSharedState?: unknown }).syncSharedState = undefined;
  }

  /** @internal */
  admit(): void {
    this.admitted();
  }

  get worldSize(): number {
    return this.group.members.includes(this) ? this.group.members.length : 1;
  }

  /** Operations are matched by kind and sequence number within a group epoch (a kill or admission starts a new one). */
  private key(kind: string): string {
    if (this.epochSeen !== this.group.epoch) {
      this.epochSeen = this.group.epoch;
      this.counters.clear();
    }
    const n = this.counters.get(kind) ?? 0;
    this.counters.set(kind, n + 1);
    return `${this.group.epoch}:${kind}#${n}`;
  }

  async allReduce(data: Float32Array, options: CollectiveAllReduceOptions): Promise<CollectiveAllReduceResult> {
    const copy = new Float32Array(data); // a failed operation leaves the input intact
    if (options.weight !== undefined) Object.assign(copy, { weight: options.weight });
    const r = (await this.group.arrive(this, `allReduce:${options.op}`, this.key(`ar:${options.tag}`), copy)) as { worldSize: number; bytes: number };
    data.set(copy);
    const w = r.worldSize;
    const bytes = Math.round((2 * (w - 1) * r.bytes) / w);
    return { data, worldSize: w, bytesSent: bytes, bytesReceived: bytes };
  }

  async syncSharedState(state: PlainState, options: { strategy: SyncStrategy }): Promise<CollectiveSyncResult> {
    return (await this.group.arrive(this, 'sync', this.key('sync'), state, options.strategy)) as CollectiveSyncResult;
  }

  /** A barrier of the members that admits pending peers. */
  async updateTopology(): Promise<void> {
    await this.group.arrive(this, 'topology', this.key('topology'), undefined);
  }

  arePeersPending(): boolean {
    return this.group.pending.length > 0;
  }
}
