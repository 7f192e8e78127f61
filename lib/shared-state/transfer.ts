/**
 * The peer's half of a shared-state sync: execute the master's {@link SyncDecision} over the data plane.
 *
 * - Sources send ranges of their live entry bytes (read-only) with {@link Engine.exchange}, all under one tag.
 * - Receivers receive into scratch buffers, never into the live entries. When every range has arrived, each
 *   entry is hashed and compared with the elected hash. A verdict round (tag + 1) tells every source which
 *   entries failed; a failed entry is fetched again whole from one other source (round r uses tags
 *   tag + 2r, tag + 2r + 1), each source at most once, and finally fails with a `STATE_HASH_MISMATCH`
 *   StateError.
 * - Only when all of a receiver's entries are verified are they copied into the live arrays (native copy on a
 *   worker thread) and `state.revision` set. Any failure before that (a source dying: PeerLostError; a
 *   timeout; a mismatch) leaves every live entry and the revision exactly as they were: a receiver's state is
 *   never half-written. After a PeerLostError the group re-forms and the master re-decides with
 *   {@link electWithout}; the peers run this function again with the new decision.
 */
import { native } from '../binding';
import type { DataPlane, ExchangeRecv, ExchangeSend } from '../collective';
import { StateError } from '../errors';
import type { SyncDecision, Transfer } from './election';
import { hashBytes } from './hash';
import { STATE_ERROR_CODES } from './entry';
import type { SharedState } from './state';

/** Who is who in the engine's current group. */
export interface GroupFacts {
  /** This peer's id (as used in the reports and the decision). */
  self: string;
  /** Peer ids in the engine's configured order: `members[i]` is engine index i. */
  members: string[];
}

export interface ExecuteOptions {
  /**
   * First tag of the sync. It uses tags `tag` .. `tag + 2 * (maxRetries + 1) - 1`, the same on every peer;
   * nothing else may use them meanwhile. Default 0.
   */
  tag?: number;
  /** Per exchange: fail with TimeoutError after this long without progress (default 30000; 0 = never). */
  timeoutMs?: number;
  /** Retry rounds for entries whose hash does not match (default: one per source, at most 3). */
  maxRetries?: number;
  signal?: AbortSignal;
}

/** What a sync did on this peer. */
export interface SyncResult {
  /** The revision this peer holds now (the elected one). */
  revision: number;
  /** 'source': sent state; 'receiver': received state; 'upToDate': nothing to do here. */
  role: 'source' | 'receiver' | 'upToDate';
  /** Entries whose bytes were replaced here (sorted). */
  changedKeys: string[];
  /** Payload bytes this peer sent and received (all rounds). */
  bytesSent: number;
  bytesReceived: number;
  /** Data rounds run (1 = no retry). */
  rounds: number;
  /** Entries that had to be fetched again after a hash mismatch (receiver: its own; source: `peer/key`). */
  retried: string[];
  /** Source only: entries that some receiver could not verify even after every retry (`peer/key`). */
  unresolved: string[];
  /** Milliseconds spent moving bytes (data and verdict rounds), hashing received entries, and committing them. */
  timings: { transferMs: number; verifyMs: number; commitMs: number };
}

/** The source a failed entry is fetched from in retry round r (≥ 1): each source once, rotating. */
export function retrySource(d: Pick<SyncDecision, 'sources'>, receiverIndex: number, keyIndex: number, round: number): string {
  const n = d.sources.length;
  return d.sources[(receiverIndex + keyIndex + round - 1) % n];
}

/** The plan of one retry round: every failed (receiver, key) whole from one source; stream = key index. */
export function retryTransfers(d: SyncDecision, failed: Map<string, Set<string>>, round: number): Transfer[] {
  const keys = Object.keys(d.entries).sort();
  const receivers = Object.keys(d.outdated).sort();
  const out: Transfer[] = [];
  for (const to of [...failed.keys()].sort()) {
    for (const key of [...failed.get(to)!].sort()) {
      const ki = keys.indexOf(key);
      out.push({ from: retrySource(d, receivers.indexOf(to), ki, round), to, key, offset: 0, length: d.entries[key].byteLength, stream: ki });
    }
  }
  return out;
}

/**
 * Executes a decision on this peer; every peer of the decision calls it with the same decision and tag.
 * Rejects with StateError when this peer failed the election (`decision.failures`), when its entries do not
 * fit, or when an entry cannot be verified from any source; with PeerLostError / TimeoutError / AbortError
 * from the data plane. The live state is untouched on every rejection.
 */
export async function executeSyncPlan(
  engine: Pick<DataPlane, 'exchange'>,
  group: GroupFacts,
  decision: SyncDecision,
  state: SharedState,
  options: ExecuteOptions = {},
): Promise<SyncResult> {
  const me = group.self;
  const failure = decision.failures[me];
  if (failure) throw new StateError(failure.code, failure.message);
  const tag = options.tag ?? 0;
  const nSources = decision.sources.length;
  const maxRetries = Math.min(options.maxRetries ?? Math.min(nSources, 3), nSources);
  const keys = Object.keys(decision.entries).sort();
  const indexOf = (peer: string): number => {
    const i = group.members.indexOf(peer);
    if (i < 0) throw new TypeError(`Peer ${peer} of the sync plan is not in this engine's group`);
    return i;
  };
  const isSource = decision.sources.includes(me);
  const myKeys = decision.outdated[me];
  const isReceiver = myKeys !== undefined;
  const result: SyncResult = {
    revision: decision.revision, role: isSource ? 'source' : isReceiver ? 'receiver' : 'upToDate',
    changedKeys: [], bytesSent: 0, bytesReceived: 0, rounds: 0, retried: [], unresolved: [],
    timings: { transferMs: 0, verifyMs: 0, commitMs: 0 },
  };
  const clock = () => performance.now();
  if (!isSource && !isReceiver) {
    if (!decision.upToDate.includes(me)) throw new TypeError(`${me} is not part of this sync decision`);
    return result;
  }

  // Receivers check that their entries fit before any byte moves, and stage into scratch buffers.
  const scratch = new Map<string, Uint8Array>();
  if (isReceiver) {
    for (const key of myKeys) {
      const e = state.entry(key);
      const want = decision.entries[key];
      if (!e || e.allowContentInequality || e.data.byteLength !== want.byteLength || e.dtype !== want.dtype) {
        throw new StateError(
          STATE_ERROR_CODES.layout,
          `Entry "${key}" here is ${e ? `${e.dtype} of ${e.data.byteLength} bytes${e.allowContentInequality ? ', allowContentInequality' : ''}` : 'missing'}; ` +
            `the elected one is ${want.dtype} of ${want.byteLength} bytes`,
        );
      }
      if (want.byteLength > 0) scratch.set(key, Buffer.allocUnsafeSlow(want.byteLength));
    }
  }
  const receiversRound0 = [...new Set(decision.transfers.map((t) => t.to))].sort();

  let transfers = decision.transfers;
  let roundReceivers = receiversRound0;
  const myFailed = new Set<string>();
  const tried = new Map<string, Set<string>>(); // key -> sources whose bytes failed (receiver)
  for (let round = 0; ; round++) {
    // Data round.
    const sends: ExchangeSend[] = [];
    const recvs: ExchangeRecv[] = [];
    const receivedKeys = new Set<string>();
    for (const t of transfers) {
      if (t.from === me) {
        sends.push({ to: indexOf(t.to), stream: t.stream, data: state.bytes(t.key).subarray(t.offset, t.offset + t.length) });
        result.bytesSent += t.length;
      } else if (t.to === me) {
        recvs.push({ from: indexOf(t.from), stream: t.stream, data: scratch.get(t.key)!.subarray(t.offset, t.offset + t.length) });
        receivedKeys.add(t.key);
        result.bytesReceived += t.length;
        if (!tried.has(t.key)) tried.set(t.key, new Set());
        tried.get(t.key)!.add(t.from);
      }
    }
    if (sends.length || recvs.length) {
      const t0 = clock();
      await engine.exchange({ tag: tag + 2 * round, timeoutMs: options.timeoutMs, signal: options.signal, sends, recvs });
      result.timings.transferMs += clock() - t0;
    }
    result.rounds = round + 1;
    if (roundReceivers.length === 0) break;

    // Verify what arrived.
    myFailed.clear();
    const tv = clock();
    for (const key of [...receivedKeys].sort()) {
      if ((await hashBytes(scratch.get(key)!)) !== decision.entries[key].hash) myFailed.add(key);
    }
    result.timings.verifyMs += clock() - tv;

    // Verdict round: each receiver of this round tells every source which entries failed.
    const imRoundReceiver = roundReceivers.includes(me);
    const verdictSends: ExchangeSend[] = [];
    const verdictRecvs: ExchangeRecv[] = [];
    const verdicts = new Map<string, Uint8Array>();
    if (imRoundReceiver) {
      const v = new Uint8Array(keys.length);
      for (const k of myFailed) v[keys.indexOf(k)] = 1;
      for (const s of decision.sources) verdictSends.push({ to: indexOf(s), stream: 0, data: v });
    }
    if (isSource) {
      for (const r of roundReceivers) {
        const v = new Uint8Array(keys.length);
        verdicts.set(r, v);
        verdictRecvs.push({ from: indexOf(r), stream: 0, data: v });
      }
    }
    if (verdictSends.length || verdictRecvs.length) {
      const t1 = clock();
      await engine.exchange({ tag: tag + 2 * round + 1, timeoutMs: options.timeoutMs, signal: options.signal, sends: verdictSends, recvs: verdictRecvs });
      result.timings.transferMs += clock() - t1;
    }
    const failed = new Map<string, Set<string>>();
    if (isSource) {
      for (const [r, v] of verdicts) {
        const ks = keys.filter((_, i) => v[i] === 1);
        if (ks.length) failed.set(r, new Set(ks));
      }
    } else if (myFailed.size) failed.set(me, new Set(myFailed));
    if (failed.size === 0) break;
    if (round >= maxRetries) {
      if (isReceiver && myFailed.size) {
        const [key] = [...myFailed].sort();
        throw new StateError(
          STATE_ERROR_CODES.hashMismatch,
          `Shared-state entry "${key}" received from ${[...tried.get(key)!].join(', ')} does not hash to the elected ` +
            `${decision.entries[key].hash} after ${round + 1} attempts${myFailed.size > 1 ? ` (${myFailed.size} entries failed)` : ''}; ` +
            'the local state is unchanged',
        );
      }
      for (const [r, ks] of failed) for (const k of ks) result.unresolved.push(`${r}/${k}`);
      break;
    }
    for (const [r, ks] of failed) for (const k of ks) result.retried.push(isSource ? `${r}/${k}` : k);
    transfers = retryTransfers(decision, failed, round + 1);
    roundReceivers = [...failed.keys()].sort();
  }

  // Every entry verified: commit.
  if (isReceiver) {
    const tc = clock();
    for (const key of myKeys) {
      const s = scratch.get(key);
      if (s) await native().copyAsync(state.bytes(key), s);
    }
    state.revision = decision.revision;
    result.changedKeys = [...myKeys].sort();
    result.timings.commitMs = clock() - tc;
  }
  return result;
}
