/**
 * What a peer tells the master about itself on every heartbeat: a fixed set of counters (cumulative since its
 * communicator started) and a couple of gauges. The set is closed and every value a bounded integer, so a
 * heartbeat stays under ~300 bytes however long the run. The master turns them into metrics and the dashboard.
 */

/** The counters and gauges a peer reports; every field is a non-negative integer. */
export interface PeerStats {
  /** Data-plane bytes sent and received by every operation (all-reduce, shared-state transfer). */
  bytesSent: number;
  bytesReceived: number;
  /** All-reduces that committed on this peer. */
  allReduces: number;
  /** Payload bytes of those all-reduces (the caller's array sizes). */
  allReduceBytes: number;
  /** Time their data-plane part took, microseconds: allReduceBytes / allReduceUs is the all-reduce throughput. */
  allReduceUs: number;
  /** Operations that failed on this peer (retried or not). */
  opsFailed: number;
  /** Shared-state syncs that committed on this peer, and its shared-state revision after the last one. */
  syncs: number;
  stateRevision: number;
  /** Syncs in which this peer received entries, and the bytes it received in them. */
  stateTransfers: number;
  stateBytesReceived: number;
  /** Times this peer lost the master and got its session back. */
  reconnects: number;
  /** TCP connections per data-plane link (K). */
  connections: number;
}

export const PEER_STATS_KEYS = [
  'bytesSent', 'bytesReceived', 'allReduces', 'allReduceBytes', 'allReduceUs', 'opsFailed', 'syncs', 'stateRevision',
  'stateTransfers', 'stateBytesReceived', 'reconnects', 'connections',
] as const satisfies readonly (keyof PeerStats)[];

/** A fresh set of zeros. */
export function emptyPeerStats(): PeerStats {
  return Object.fromEntries(PEER_STATS_KEYS.map((k) => [k, 0])) as unknown as PeerStats;
}

/** Checks a received stats map: only the known keys, each a non-negative safe integer (absent keys count as 0). */
export function checkPeerStats(v: unknown): string | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'not a map';
  for (const [k, x] of Object.entries(v)) {
    if (!(PEER_STATS_KEYS as readonly string[]).includes(k)) return `unknown counter ${JSON.stringify(k.slice(0, 40))}`;
    if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) return `"${k}" is not a non-negative integer`;
  }
  return undefined;
}
