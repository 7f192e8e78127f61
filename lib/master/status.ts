/**
 * The master's state for tools, as one JSON document (`GET /status`): every group with its ring, epoch and
 * shared-state revision, every member and pending peer with its address, connections, last heartbeat, throughput
 * and reported counters, the master's own counters, the peers' totals and the throughput history. The same
 * numbers /metrics serves (metrics.ts); the dashboard draws this.
 */
import { monotonicMs } from '../clock';
import type { PeerStats } from '../protocol/stats';
import { formatHostPort } from '../validate';
import type { PeerView } from './coordinator';
import type { Counters, FeedEvent } from './feed';
import type { GroupInfo } from './group';
import type { PeerTotals, Telemetry, ThroughputSample } from './telemetry';

/** What metrics, /status and the dashboard read of a master. */
export interface MasterView {
  /** `host:port` peers dial. */
  readonly address: string;
  /** When the master started listening (ms since the epoch). */
  readonly startedAt: number;
  /** Whether the run has a token. */
  readonly auth: boolean;
  /** Warnings for the operator (e.g. listening off loopback without a token). */
  readonly warnings?: readonly string[];
  readonly counters: Readonly<Counters>;
  readonly telemetry: Telemetry;
  groupsInfo(): GroupInfo[];
  peer(id: string): PeerView | undefined;
  events(afterSeq?: number): FeedEvent[];
}

/** A live view of a master (getters, so that every read sees the current state). */
export function viewOf(
  m: { readonly address: string; readonly startedAt: number; readonly counters: Readonly<Counters> }, auth: boolean, telemetry: Telemetry,
  core: { groupsInfo(): GroupInfo[]; peer(id: string): PeerView | undefined; readonly feed: { recent(after?: number): FeedEvent[] } },
  warnings: readonly string[] = [],
): MasterView {
  return {
    get address() { return m.address; },
    get startedAt() { return m.startedAt; },
    auth,
    warnings,
    get counters() { return m.counters; },
    telemetry,
    groupsInfo: () => core.groupsInfo(),
    peer: (id) => core.peer(id),
    events: (after) => core.feed.recent(after),
  };
}

export interface PeerStatus {
  id: string;
  label: string;
  /** Data-plane address. */
  address: string;
  /** Accepted into the ring (false while pending). */
  member: boolean;
  /** TCP connections per data-plane link. */
  connections: number;
  /** Milliseconds since its last heartbeat. */
  lastHeartbeatMsAgo: number | null;
  /** All-reduce throughput over the last few seconds, bytes per second (payload bytes / time all-reducing). */
  throughput: number;
  stats: PeerStats | null;
}

export interface GroupStatus {
  peerGroup: number;
  epoch: number;
  /** Shared-state revision after the last sync, null before the first. */
  stateRevision: number | null;
  /** Member ids in ring order. */
  ring: string[];
  members: PeerStatus[];
  pending: PeerStatus[];
}

export interface LinkModes {
  control: 'aes-256-gcm' | 'off';
  data: 'off';
}

/** The link modes of a master with (or without) a run token. */
export function linkModes(auth: boolean): LinkModes {
  return { control: auth ? 'aes-256-gcm' : 'off', data: 'off' };
}

export interface Status {
  /**
   * `encryption`: what protects each kind of link (docs/security.md, "Encryption"): every control connection is
   * sealed with AES-256-GCM when the run has a token; the data plane is not encrypted yet.
   */
  master: { address: string; startedAt: string; uptimeSeconds: number; auth: boolean; encryption: LinkModes; warnings: string[] };
  counters: Counters;
  /** The peers' counters summed over every peer seen, the departed included. */
  peerTotals: PeerTotals;
  groups: GroupStatus[];
  throughputHistory: ThroughputSample[];
  /** Sequence number of the newest event (`GET /events?after=N` returns the later ones). */
  lastEventSeq: number;
}

function peerStatus(view: MasterView, id: string, now: number): PeerStatus {
  const p = view.peer(id);
  const t = view.telemetry.peer(id);
  return {
    id,
    label: p?.label ?? '',
    address: p ? formatHostPort(p.host, p.port) : '',
    member: p?.member ?? false,
    connections: t?.stats.connections ?? 0,
    lastHeartbeatMsAgo: t ? Math.round(Math.max(0, now - t.lastHeartbeat)) : null,
    throughput: t?.throughput ?? 0,
    stats: t?.stats ?? null,
  };
}

/**
 * The whole status document. `now`: wall-clock ms (uptime, shown to humans); `mono`: the monotonic reading heartbeat
 * ages are measured from (a test with one fake clock passes only `now`).
 */
export function statusOf(view: MasterView, wallNow?: number, monoNow?: number): Status {
  const now = wallNow ?? Date.now();
  const mono = monoNow ?? wallNow ?? monotonicMs();
  const events = view.events();
  return {
    master: { address: view.address, startedAt: new Date(view.startedAt).toISOString(), uptimeSeconds: (now - view.startedAt) / 1000, auth: view.auth, encryption: linkModes(view.auth), warnings: [...(view.warnings ?? [])] },
    counters: { ...view.counters },
    peerTotals: view.telemetry.totals(),
    groups: view.groupsInfo().sort((a, b) => a.peerGroup - b.peerGroup).map((g) => ({
      peerGroup: g.peerGroup,
      epoch: g.epoch,
      stateRevision: view.telemetry.revision(g.peerGroup) ?? null,
      ring: g.members,
      members: g.members.map((id) => peerStatus(view, id, mono)),
      pending: g.pending.map((id) => peerStatus(view, id, mono)),
    })),
    throughputHistory: view.telemetry.history(),
    lastEventSeq: events.length ? events[events.length - 1].seq : 0,
  };
}
