/**
 * What the master knows of its peers beyond membership: when each last sent a heartbeat, the counters it
 * reported with it (lib/protocol/stats.ts), its recent all-reduce throughput, each group's shared-state revision
 * (from the feed's `shared state synced` events), and a bounded history of throughput per group for the
 * dashboard's chart. Metrics (metrics.ts) and /status (status.ts) read it; it owns no timer: the HTTP server calls
 * {@link Telemetry.sample} once a second.
 */
import { PEER_STATS_KEYS, PeerStats, emptyPeerStats } from '../protocol/stats';
import { monotonicMs } from '../clock';
import type { Feed } from './feed';

/** The peers' counters summed over the run (the gauges among PeerStats do not add up). */
export type PeerTotals = Omit<PeerStats, 'stateRevision' | 'connections'>;
const COUNTER_KEYS: readonly (keyof PeerStats)[] = PEER_STATS_KEYS.filter((k) => k !== 'stateRevision' && k !== 'connections');

/** Heartbeat samples a peer's throughput is computed over, ms. */
const THROUGHPUT_WINDOW_MS = 5000;

interface PeerRecord {
  stats: PeerStats;
  lastHeartbeat: number;
  /** (time, allReduceBytes, allReduceUs) at recent heartbeats, oldest first. */
  window: { at: number; bytes: number; us: number }[];
}

/** One point of the throughput chart: all-reduce throughput per group, bytes per second. */
export interface ThroughputSample {
  at: number;
  groups: Record<string, number>;
}

export class Telemetry {
  private readonly peers = new Map<string, PeerRecord>();
  /** Counters of peers that are gone, so that run totals never go down. */
  private readonly retired: PeerStats = emptyPeerStats();
  private readonly revisions = new Map<number, number>();
  private readonly samples: ThroughputSample[] = [];

  /**
   * `now`: the clock of heartbeat ages and throughput windows (monotonic); `wall`: the chart points' timestamps
   * (shown to humans; `now` when only `now` is given, as tests do).
   */
  constructor(feed: Feed, private readonly now: () => number = monotonicMs, private readonly historyLength = 600, private readonly wall: () => number = now === monotonicMs ? Date.now : now) {
    feed.subscribe((e) => {
      const group = e.fields.group;
      if (typeof group !== 'number') return;
      if (e.what === 'shared state synced' && typeof e.fields.revision === 'number') this.revisions.set(group, e.fields.revision);
      else if (e.what === 'group is empty') this.revisions.delete(group);
    });
  }

  /** A peer joined or sent a heartbeat (with its counters, when it reports them). */
  heartbeat(peer: string, stats?: Partial<PeerStats>): void {
    const at = this.now();
    let r = this.peers.get(peer);
    if (!r) this.peers.set(peer, (r = { stats: emptyPeerStats(), lastHeartbeat: at, window: [] }));
    r.lastHeartbeat = at;
    if (!stats) return;
    // Counters only grow: a smaller value would be a confused peer, and must not make a run total go down.
    for (const k of PEER_STATS_KEYS) {
      const v = stats[k];
      if (v !== undefined && (v >= r.stats[k] || !COUNTER_KEYS.includes(k))) r.stats[k] = v;
    }
    r.window.push({ at, bytes: r.stats.allReduceBytes, us: r.stats.allReduceUs });
    while (r.window.length > 2 && r.window[1].at <= at - THROUGHPUT_WINDOW_MS) r.window.shift();
  }

  /** A peer left the run: its counters move into the run totals. */
  forget(peer: string): void {
    const r = this.peers.get(peer);
    if (!r) return;
    this.peers.delete(peer);
    for (const k of COUNTER_KEYS) this.retired[k] += r.stats[k];
  }

  /** What a live peer reported, when it last did, and its all-reduce throughput over the last few seconds. */
  peer(id: string): { stats: PeerStats; lastHeartbeat: number; throughput: number } | undefined {
    const r = this.peers.get(id);
    if (!r) return undefined;
    return { stats: { ...r.stats }, lastHeartbeat: r.lastHeartbeat, throughput: throughputOf(r) };
  }

  /** Counters summed over every peer the master has seen, the departed included (they only grow). */
  totals(): PeerTotals {
    const t = { ...this.retired };
    for (const r of this.peers.values()) for (const k of COUNTER_KEYS) t[k] += r.stats[k];
    const { stateRevision: _r, connections: _c, ...counters } = t;
    return counters;
  }

  /** The group's shared-state revision after its last sync (undefined before the first). */
  revision(group: number): number | undefined {
    return this.revisions.get(group);
  }

  /** Records one chart point: each group's throughput, the mean over its members. */
  sample(groups: { peerGroup: number; members: string[] }[]): void {
    const point: ThroughputSample = { at: this.wall(), groups: {} };
    for (const g of groups) {
      const rates = g.members.map((m) => this.peer(m)?.throughput ?? 0);
      point.groups[String(g.peerGroup)] = rates.length ? rates.reduce((a, b) => a + b, 0) / rates.length : 0;
    }
    this.samples.push(point);
    if (this.samples.length > this.historyLength) this.samples.shift();
  }

  /** The chart's points, oldest first. */
  history(): ThroughputSample[] {
    return [...this.samples];
  }
}

/** Bytes per second over the window: payload bytes all-reduced per second spent all-reducing. */
function throughputOf(r: PeerRecord): number {
  const first = r.window[0];
  const last = r.window[r.window.length - 1];
  if (!first || last.us <= first.us) return 0;
  return ((last.bytes - first.bytes) / (last.us - first.us)) * 1e6;
}
