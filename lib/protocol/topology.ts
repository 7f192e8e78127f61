/**
 * Checks of the structured fields of the topology messages (`topoReport`, `topoResult`): a member's measured
 * links and the group's link matrix. Numbers here are floats (bytes/s, ms), unlike the schema's uints.
 */
import { custom } from './schema';

/** One directed link as its sender measured it. */
export interface MeasuredLink {
  /** The receiver's master id. */
  to: string;
  /** Throughput over the link's K connections, bytes/s. */
  bytesPerSec: number;
  /** Round trip, ms. */
  rttMs: number;
}

/** The group's link matrix: row i is what peers[i] sends to each peer; `ageMs` since each pair was measured. */
export interface WireMatrix {
  peers: string[];
  bandwidth: number[][];
  rttMs: number[][];
  ageMs: number[][];
}

const PEER_ID_MAX = 64;
const MAX_PEERS = 4096;

const finite = (v: unknown, min: number): v is number => typeof v === 'number' && Number.isFinite(v) && v >= min;

function checkLinks(v: unknown): string | undefined {
  if (!Array.isArray(v) || v.length > MAX_PEERS) return `not an array of at most ${MAX_PEERS} links`;
  for (const l of v) {
    if (typeof l !== 'object' || l === null || Array.isArray(l) || Object.keys(l).length !== 3) return 'a link must be exactly { to, bytesPerSec, rttMs }';
    const { to, bytesPerSec, rttMs } = l as Record<string, unknown>;
    if (typeof to !== 'string' || to.length === 0 || to.length > PEER_ID_MAX) return 'a link has a bad peer id';
    if (!finite(bytesPerSec, 0) || !finite(rttMs, 0)) return `the link to ${to} has a bad bytesPerSec or rttMs`;
  }
  return undefined;
}

function checkMatrix(v: unknown): string | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'not a map';
  const { peers, bandwidth, rttMs, ageMs } = v as Record<string, unknown>;
  if (Object.keys(v).length !== 4) return 'must be exactly { peers, bandwidth, rttMs, ageMs }';
  if (!Array.isArray(peers) || peers.length > MAX_PEERS || peers.some((p) => typeof p !== 'string' || p.length > PEER_ID_MAX)) return 'bad peers';
  const n = peers.length;
  for (const [name, rows] of [['bandwidth', bandwidth], ['rttMs', rttMs], ['ageMs', ageMs]] as const) {
    if (!Array.isArray(rows) || rows.length !== n) return `${name} must have ${n} rows`;
    for (const row of rows) {
      if (!Array.isArray(row) || row.length !== n || row.some((x) => !finite(x, 0))) return `${name} must hold ${n} non-negative numbers per row`;
    }
  }
  return undefined;
}

function checkIds(v: unknown): string | undefined {
  if (!Array.isArray(v) || v.length > MAX_PEERS) return 'not an array of peer ids';
  return v.every((x) => typeof x === 'string' && x.length > 0 && x.length <= PEER_ID_MAX) ? undefined : 'a bad peer id';
}

function checkPairs(v: unknown): string | undefined {
  if (!Array.isArray(v) || v.length % 2 !== 0 || v.length > 2 * MAX_PEERS * MAX_PEERS) return 'not an even-length list of ring indices';
  return v.every((x) => Number.isSafeInteger(x) && x >= 0 && x < MAX_PEERS) ? undefined : 'a bad ring index';
}

/** Pairs of ring indices, flattened: [a0, b0, a1, b1, ...]. */
export const indexPairs = () => custom<number[]>('a flat list of ring index pairs', checkPairs);
export const measuredLinks = () => custom<MeasuredLink[]>('a list of measured links', checkLinks);
export const wireMatrix = () => custom<WireMatrix>('a link matrix', checkMatrix);
export const peerIds = () => custom<string[]>('a list of peer ids', checkIds);
/** A finite number of at least `min` (ms, bytes/s, fractions). */
export const num = (min = 0, max = Infinity) =>
  custom<number>(max === Infinity ? `a number >= ${min}` : `a number from ${min} to ${max}`, (v) => (finite(v, min) && (v as number) <= max ? undefined : 'out of range'));
