/**
 * The master's half of a shared-state sync, as pure functions: from every peer's report (strategy, revision,
 * entry hashes) decide the elected state, who is up to date, who must receive which entries, which peers fail
 * (and why), and a deterministic transfer plan that every peer executes with {@link executeSyncPlan}.
 * Nothing here touches the network or tensor data; the same inputs always give the same decision.
 *
 * The rules (also in docs/shared-state.md):
 *
 * - **Revisions.** The user increments `state.revision` by exactly one before every sync. When the group has
 *   synced before (`previous`), every non-receiveOnly peer that completed that sync must report
 *   `previous.revision + 1`; any other value fails that peer with `STATE_REVISION`, naming the expected
 *   revision, and the peer takes no part in the sync. Peers new to the group (not in `previous.peers`) and
 *   receiveOnly peers are exempt: whatever revision they report, they receive the elected state and revision.
 *   Only states at the expected revision can be elected. On a group's first sync any revision may be elected.
 * - **sendOnly.** If any sendOnly peers remain, their state wins outright, provided they all hold the same
 *   (revision, key -> hash) set. If they disagree, every sendOnly peer fails with `STATE_SENDONLY_CONFLICT`
 *   (the message lists who holds what) and is listed in `drop`; the remaining peers elect among the
 *   enforcePopular peers as if there were no sendOnly peer.
 * - **Popularity.** Otherwise the (revision, key -> hash) set held by the most enforcePopular peers wins. Ties go
 *   to the higher revision, then to the set held by the peer whose id sorts first (JS string order).
 * - **No source.** If no peer offers a state (all receiveOnly, or every candidate failed), every remaining peer
 *   fails with `STATE_NO_SOURCE`.
 * - **Layout.** A peer whose keys, dtypes or byte lengths differ from the elected state cannot receive it and
 *   fails with `STATE_LAYOUT_MISMATCH`. allowContentInequality entries are not reported, so they never count.
 * - **Sources** are the up-to-date peers that are not receiveOnly. Each differing entry of each out-of-date
 *   peer is split into ranges among the sources (proportionally to `sourceWeights`, boundaries aligned to
 *   `alignment`, at least `minRangeBytes` per range); small entries go whole to the least-loaded source.
 */
import { DTYPE_CODES } from '../dtype';
import type { EntryDigest, StateDigest } from './hash';
import { STATE_ERROR_CODES } from './entry';

export type SyncStrategy = 'enforcePopular' | 'sendOnly' | 'receiveOnly';
export const SYNC_STRATEGIES: readonly SyncStrategy[] = ['enforcePopular', 'sendOnly', 'receiveOnly'];

/** What each peer sends the master before a sync: its id, strategy and {@link hashState} digest. */
export interface PeerStateReport extends StateDigest {
  peerId: string;
  strategy: SyncStrategy;
}

export interface ElectionOptions {
  /** The group's last successful sync: its revision and the peers that completed it. Absent on the first. */
  previous?: { revision: number; peers: string[] };
  /** Range boundaries are multiples of this many bytes (default 1 MiB, the hash block). */
  alignment?: number;
  /** An entry is split only into ranges of at least this many bytes (default 4 MiB). */
  minRangeBytes?: number;
  /** Relative upload capacity of each source (default 1 each), e.g. from bandwidth probes. */
  sourceWeights?: Record<string, number>;
}

/** Why a peer fails this sync. */
export interface PeerFailure {
  code: string;
  message: string;
}

/** One range of one entry, sent by `from` to `to` as exchange stream `stream`. */
export interface Transfer {
  from: string;
  to: string;
  key: string;
  offset: number;
  length: number;
  stream: number;
}

/** The master's decision, the same object for every peer of the group. */
export interface SyncDecision {
  /** The elected revision (every successful peer holds it after the sync). */
  revision: number;
  /** The elected entries (allowContentInequality entries are not part of it). */
  entries: Record<string, EntryDigest>;
  /** Peers already holding the elected state, sorted. */
  upToDate: string[];
  /** Up-to-date peers that offer their state (not receiveOnly), sorted; the transfers come from them. */
  sources: string[];
  /** Out-of-date peer -> keys it receives, sorted (an empty list: only its revision changes). */
  outdated: Record<string, string[]>;
  /** Peers that fail this sync and why; they take no part in the transfers. */
  failures: Record<string, PeerFailure>;
  /** Peers the master should remove from the group (sendOnly peers in conflict). */
  drop: string[];
  /** Every range to move, in a deterministic order; stream ids are unique in the plan. */
  transfers: Transfer[];
}

const DEFAULT_ALIGNMENT = 1 << 20;
const DEFAULT_MIN_RANGE = 4 << 20;
const HEX16 = /^[0-9a-f]{16}$/;

/** Validates a report received from a peer (throws TypeError naming the problem). */
export function validateStateReport(r: unknown): PeerStateReport {
  const fail = (why: string): never => {
    throw new TypeError(`Invalid shared-state report: ${why}`);
  };
  if (typeof r !== 'object' || r === null) fail('not an object');
  const o = r as PeerStateReport;
  if (typeof o.peerId !== 'string' || o.peerId.length === 0) fail('peerId must be a non-empty string');
  if (!SYNC_STRATEGIES.includes(o.strategy)) fail(`unknown strategy ${JSON.stringify(o.strategy)} from ${o.peerId}`);
  if (!Number.isSafeInteger(o.revision) || o.revision < 0) fail(`revision ${String(o.revision)} from ${o.peerId}`);
  if (typeof o.entries !== 'object' || o.entries === null) fail(`entries missing from ${o.peerId}`);
  for (const [k, e] of Object.entries(o.entries)) {
    if (typeof e !== 'object' || e === null || typeof e.hash !== 'string' || !HEX16.test(e.hash)) fail(`entry "${k}" of ${o.peerId} has no valid hash`);
    if (!Number.isSafeInteger(e.byteLength) || e.byteLength < 0) fail(`entry "${k}" of ${o.peerId} has a bad byteLength`);
    if (typeof e.dtype !== 'string' || !(e.dtype in DTYPE_CODES)) fail(`entry "${k}" of ${o.peerId} has an unknown dtype`);
  }
  return o;
}

/** Canonical identity of a (revision, key -> hash) set. */
function setIdOf(r: StateDigest): string {
  const keys = Object.keys(r.entries).sort();
  return JSON.stringify([r.revision, keys.map((k) => [k, r.entries[k].hash, r.entries[k].byteLength, r.entries[k].dtype])]);
}

function describeSet(r: StateDigest): string {
  const keys = Object.keys(r.entries).sort();
  const shown = keys.slice(0, 4).map((k) => `${k}=${r.entries[k].hash.slice(0, 8)}`);
  return `revision ${r.revision} {${shown.join(', ')}${keys.length > 4 ? `, +${keys.length - 4} more` : ''}}`;
}

/** Decides a sync; see the module comment for the rules. Throws TypeError only for malformed input. */
export function electSharedState(reports: PeerStateReport[], options: ElectionOptions = {}): SyncDecision {
  const ids = new Set<string>();
  for (const r of reports) {
    validateStateReport(r);
    if (ids.has(r.peerId)) throw new TypeError(`Two shared-state reports from ${r.peerId}`);
    ids.add(r.peerId);
  }
  const sorted = [...reports].sort((a, b) => (a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0));
  const failures: Record<string, PeerFailure> = {};
  const drop: string[] = [];
  const prev = options.previous;
  const expected = prev ? prev.revision + 1 : undefined;
  const prevPeers = new Set(prev?.peers ?? []);

  // 1. Revision rule for the peers that took part in the previous sync.
  for (const r of sorted) {
    if (expected !== undefined && r.strategy !== 'receiveOnly' && prevPeers.has(r.peerId) && r.revision !== expected) {
      failures[r.peerId] = {
        code: STATE_ERROR_CODES.revision,
        message:
          `Shared-state revision violation on ${r.peerId}: expected revision ${expected} (the group's last sync was at ` +
          `revision ${prev!.revision}), got ${r.revision}. Increase state.revision by exactly one before each sync.`,
      };
    }
  }
  const alive = () => sorted.filter((r) => !failures[r.peerId]);
  const electable = (r: PeerStateReport) => expected === undefined || r.revision === expected;

  // 2. sendOnly peers must agree.
  let winner: PeerStateReport | undefined;
  const sendOnly = alive().filter((r) => r.strategy === 'sendOnly');
  if (sendOnly.length > 0) {
    const groups = new Map<string, PeerStateReport[]>();
    for (const r of sendOnly) groups.set(setIdOf(r), [...(groups.get(setIdOf(r)) ?? []), r]);
    if (groups.size === 1 && electable(sendOnly[0])) {
      winner = sendOnly[0];
    } else {
      const what =
        groups.size === 1
          ? `they hold revision ${sendOnly[0].revision}, the group expects ${expected}`
          : [...groups.values()].map((g) => `${g.map((r) => r.peerId).join(', ')} hold ${describeSet(g[0])}`).join('; ');
      for (const r of sendOnly) {
        failures[r.peerId] = {
          code: groups.size === 1 ? STATE_ERROR_CODES.revision : STATE_ERROR_CODES.sendOnlyConflict,
          message:
            groups.size === 1
              ? `The sendOnly peers' state cannot be elected: ${what}`
              : `sendOnly peers disagree on the shared state, so none of them is trusted and each is dropped: ${what}`,
        };
        if (groups.size > 1) drop.push(r.peerId);
      }
    }
  }

  // 3. Otherwise the most popular set among enforcePopular peers.
  if (!winner) {
    const counts = new Map<string, { n: number; first: PeerStateReport }>();
    for (const r of alive()) {
      if (r.strategy !== 'enforcePopular' || !electable(r)) continue;
      const id = setIdOf(r);
      const c = counts.get(id);
      if (c) c.n++;
      else counts.set(id, { n: 1, first: r }); // `sorted` order: `first` is the smallest peer id holding the set
    }
    let best: { n: number; first: PeerStateReport } | undefined;
    for (const c of counts.values()) {
      if (
        !best ||
        c.n > best.n ||
        (c.n === best.n && c.first.revision > best.first.revision) ||
        (c.n === best.n && c.first.revision === best.first.revision && c.first.peerId < best.first.peerId)
      ) {
        best = c;
      }
    }
    winner = best?.first;
  }

  if (!winner) {
    const why =
      sorted.length === 0
        ? 'the group has no peers'
        : sorted.every((r) => r.strategy === 'receiveOnly')
          ? 'every peer of the group asked for receiveOnly'
          : 'no peer that could offer its state is left (see the other peers\' errors)';
    for (const r of alive()) {
      failures[r.peerId] = { code: STATE_ERROR_CODES.noSource, message: `No peer offers its shared state: ${why}` };
    }
    return { revision: expected ?? 0, entries: {}, upToDate: [], sources: [], outdated: {}, failures, drop, transfers: [] };
  }

  // 4. Compare every remaining peer with the elected set.
  const entries = winner.entries;
  const keys = Object.keys(entries).sort();
  const upToDate: string[] = [];
  const outdated: Record<string, string[]> = {};
  for (const r of alive()) {
    const problems: string[] = [];
    for (const k of keys) {
      const mine = r.entries[k];
      if (!mine) problems.push(`has no entry "${k}" (or marks it allowContentInequality)`);
      else if (mine.byteLength !== entries[k].byteLength || mine.dtype !== entries[k].dtype) {
        problems.push(`entry "${k}" is ${mine.dtype} of ${mine.byteLength} bytes, the elected one ${entries[k].dtype} of ${entries[k].byteLength} bytes`);
      }
    }
    for (const k of Object.keys(r.entries)) if (!(k in entries)) problems.push(`has entry "${k}" that the elected state lacks`);
    if (problems.length) {
      failures[r.peerId] = {
        code: STATE_ERROR_CODES.layout,
        message: `${r.peerId} cannot take the elected shared state (${describeSet(winner)} from ${winner.peerId}): ${problems.slice(0, 5).join('; ')}`,
      };
      continue;
    }
    const differing = keys.filter((k) => r.entries[k].hash !== entries[k].hash);
    if (differing.length === 0 && r.revision === winner.revision) upToDate.push(r.peerId);
    else outdated[r.peerId] = differing;
  }
  const strategyOf = new Map(sorted.map((r) => [r.peerId, r.strategy]));
  const sources = upToDate.filter((p) => strategyOf.get(p) !== 'receiveOnly');
  const decision: SyncDecision = {
    revision: winner.revision, entries, upToDate, sources, outdated, failures, drop, transfers: [],
  };
  decision.transfers = planTransfers(decision, options);
  return decision;
}

/**
 * Splits every differing entry of every out-of-date peer among the sources. Deterministic: the same decision
 * and options give the same plan on every machine.
 */
export function planTransfers(
  d: Pick<SyncDecision, 'entries' | 'outdated' | 'sources'>,
  options: Pick<ElectionOptions, 'alignment' | 'minRangeBytes' | 'sourceWeights'> = {},
): Transfer[] {
  const alignment = options.alignment ?? DEFAULT_ALIGNMENT;
  const minRange = Math.max(alignment, options.minRangeBytes ?? DEFAULT_MIN_RANGE);
  if (!Number.isSafeInteger(alignment) || alignment < 1) throw new TypeError('alignment must be a positive integer');
  const sources = d.sources;
  const weight = (p: string) => {
    const w = options.sourceWeights?.[p] ?? 1;
    return Number.isFinite(w) && w > 0 ? w : 1;
  };
  const load = new Map(sources.map((s) => [s, 0]));
  const transfers: Transfer[] = [];
  let stream = 0;
  const receivers = Object.keys(d.outdated).sort();
  if (sources.length === 0 && receivers.some((r) => d.outdated[r].length > 0)) {
    throw new TypeError('planTransfers: entries to move but no source');
  }
  for (const to of receivers) {
    for (const key of [...d.outdated[to]].sort()) {
      const len = d.entries[key].byteLength;
      if (len === 0) continue;
      const parts = Math.min(sources.length, Math.max(1, Math.floor(len / minRange)));
      let chosen: string[];
      if (parts === sources.length) chosen = sources;
      else {
        // The `parts` least-loaded sources (relative to their weight); ties to the earlier source.
        chosen = [...sources]
          .sort((a, b) => load.get(a)! / weight(a) - load.get(b)! / weight(b) || sources.indexOf(a) - sources.indexOf(b))
          .slice(0, parts)
          .sort((a, b) => sources.indexOf(a) - sources.indexOf(b));
      }
      const total = chosen.reduce((s, p) => s + weight(p), 0);
      let acc = 0;
      let start = 0;
      chosen.forEach((from, j) => {
        acc += weight(from);
        const end = j === chosen.length - 1 ? len : Math.min(len, Math.floor((len * acc) / total / alignment) * alignment);
        if (end > start) {
          transfers.push({ from, to, key, offset: start, length: end - start, stream: stream++ });
          load.set(from, load.get(from)! + (end - start));
          start = end;
        }
      });
    }
  }
  return transfers;
}

/**
 * Re-decides a sync after peers were lost (e.g. a source died mid-transfer): the same election over the
 * surviving peers' reports. A failed transfer leaves every receiver's entries as they were, so the reports
 * the peers sent for the failed attempt are still true.
 */
export function electWithout(reports: PeerStateReport[], lost: Iterable<string>, options: ElectionOptions = {}): SyncDecision {
  const gone = new Set(lost);
  return electSharedState(
    reports.filter((r) => !gone.has(r.peerId)),
    options.previous ? { ...options, previous: { ...options.previous, peers: options.previous.peers.filter((p) => !gone.has(p)) } } : options,
  );
}

/** The peers that completed a sync successfully (for the next sync's `previous.peers`). */
export function syncedPeers(d: SyncDecision): string[] {
  return [...d.upToDate, ...Object.keys(d.outdated)].sort();
}
