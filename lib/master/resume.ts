/**
 * Rebuilding a group from its peers' reports, for a master that does not know them (it was restarted, or a
 * standby took over): pure functions and one small record per group being rebuilt, driven by the coordinator.
 *
 * When the rebuild is complete (docs/master.md, "Restart and fail-over"): a group's rebuild opens with the first
 * report (its *resume window*, `resumeWindowMs`) and completes as soon as every member of the newest ring any
 * report names has reported, or when the window ends; peers that did not report by then (they died during the
 * outage) are simply missing from the rebuilt ring, and one that reports later is taken back in with a re-form.
 * The rebuilt group starts at an epoch above every reported one, so every operation of the old epochs ends
 * (retryably) everywhere, and nobody dials a peer with an old ticket.
 *
 * Reports come from token holders, not from a trusted source, so no single report decides for the others
 * (docs/security.md, "Resume reports"): an epoch above {@link MAX_EPOCH}, or more than {@link MAX_EPOCH_LEAD}
 * above every other reporter's, is refused; a member that reports is left out of the rebuilt ring only when a
 * majority of its own reported ring (at least two) report a newer ring without it (one reporter cannot evict the
 * others, and ids that ring does not name are no witnesses); a ring no other reporter's ring shares an id with is
 * refused unless more reporters back it than any other; and a rebuild does not complete before its window on a
 * one-member ring alone.
 */
import type { ResumeReport } from '../protocol';
import { masterIdOf } from './context';

/** Highest epoch a report may claim: a run re-forms far fewer times; above it, `epoch + 1` would near 2^53. */
export const MAX_EPOCH = 2 ** 32;
/**
 * How far one reporter's epoch may be ahead of every other reporter's. A crash during a re-form leaves some
 * members one epoch ahead of the others (two, if it was the second of two quick re-forms); far more is a forgery.
 */
export const MAX_EPOCH_LEAD = 4;
/**
 * Largest peer number a report may name (`p4294967296`): the master numbers its new peers above every reported
 * one, and a number past 15 digits would make session ids it cannot parse (lib/protocol/resume.ts).
 */
export const MAX_PEER_NUMBER = 2 ** 32;
/** How far a reported peer number may be above every number the other reporters name. */
export const MAX_PEER_LEAD = 1 << 16;
/** Reporters of a newer ring that must agree a member was left out before the rebuild leaves it out. */
export const EXCLUSION_QUORUM = 2;

/** One peer's report, as the coordinator received it. */
export interface RejoinReport {
  peer: string;
  group: number;
  /** Its data-plane address. */
  host: string;
  port: number;
  label?: string;
  /** It lets the master announce admission votes (lib/master/admission.ts). */
  autoAdmit?: boolean;
  /** Its identity public key (lib/peer/identity.ts). */
  identity?: Uint8Array;
  report: ResumeReport;
}

/** What the rebuilt group looks like and what the master says first. */
export interface RebuildPlan {
  /** The newest epoch reported: the group restarts at the epoch above it. */
  fromEpoch: number;
  /** Members of the rebuilt ring, in the order of the newest reported ring. */
  members: string[];
  /** Peers still waiting to be voted in. */
  pending: string[];
  /** Peers that report a ring the group had already left behind (it dropped them): they are dropped again. */
  excluded: { peer: string; reason: string }[];
  /** Operation commits that reached only some members: sent to those of `fromEpoch` before the new ring. */
  commits: { to: string; key: string }[];
  /** A sync committed on some members: the others get its commit. */
  stateCommit?: { to: string[]; sync: number; revision: number };
  /**
   * Members that completed fewer votes than another member: the crash cut their vote's result off. The vote they
   * say again is answered at once (the others have moved on and will not vote with them).
   */
  voteCatchUp: string[];
  /** What the group's shared-state sync takes over (StateSync.restore). */
  sync: { seq: number; states: Map<string, { revision: number; peers: string[] }>; inProgress?: { id: number; attempt: number } };
}

/** A report that cannot be true on its own; undefined when it is consistent. */
export function checkReport(r: RejoinReport): string | undefined {
  const { report } = r;
  if (report.epoch > MAX_EPOCH) return `${r.peer} reports epoch ${report.epoch}, beyond any run (at most ${MAX_EPOCH}): refused`;
  if (report.member) {
    if (report.epoch === 0) return `${r.peer} reports it is a member at epoch 0 (epochs start at 1)`;
    if (!report.ring.some((q) => masterIdOf(q.id) === r.peer)) return `${r.peer} reports it is a member of epoch ${report.epoch} but is not in that ring`;
  }
  for (const id of [r.peer, ...report.ring.map((q) => masterIdOf(q.id))]) {
    if (!/^p[1-9][0-9]{0,9}$/.test(id) || peerNumber(id) > MAX_PEER_NUMBER) {
      return `${r.peer} reports peer id ${JSON.stringify(id.slice(0, 40))}, not one this run could have given (p1 to p${MAX_PEER_NUMBER}): refused`;
    }
  }
  if (report.committedSync > report.lastSync) return `${r.peer} reports sync ${report.committedSync} committed but only ${report.lastSync} seen`;
  return undefined;
}

/**
 * Checks a late report against a group the master already runs: a peer cannot have installed an epoch the group
 * has not reached, nor committed a shared-state revision the group never committed.
 */
export function checkAgainstLive(r: RejoinReport, epoch: number, lastRevision: (layout: string) => number | undefined): string | undefined {
  if (r.report.epoch >= epoch) {
    return `${r.peer} reports epoch ${r.report.epoch}, but group ${r.group} is at epoch ${epoch}: an epoch from the future (a peer of another master or run?)`;
  }
  for (const s of r.report.states) {
    const last = lastRevision(s.layout);
    if (last !== undefined && s.revision > last) {
      return `${r.peer} reports shared-state revision ${s.revision}, but group ${r.group} last committed revision ${last} of that state: a revision cannot skip ahead of the group`;
    }
  }
  return undefined;
}

/**
 * Checks a report against the others of the same rebuild: an epoch far ahead of every other reporter's is refused
 * (the other order, a forged report first, is caught by {@link planRebuild}).
 */
export function checkAgainstReports(r: RejoinReport, others: Iterable<RejoinReport>): string | undefined {
  // Measured against reporters that do not co-sign r's ring and epoch: minted ids cannot vouch for each other.
  const top = maxEpoch([...others].filter((o) => o.peer !== r.peer && !sameRing(o, r)));
  if (top !== undefined && r.report.epoch > top + MAX_EPOCH_LEAD) {
    return `${r.peer} reports epoch ${r.report.epoch}, but the other members of group ${r.group} report at most ${top}: an epoch that far ahead is refused`;
  }
  const named = (x: RejoinReport) => [x.peer, ...x.report.ring.map((q) => masterIdOf(q.id))].map(peerNumber);
  const rest = [...others].filter((o) => o.peer !== r.peer).flatMap(named);
  const high = Math.max(...named(r));
  if (rest.length > 0 && high > Math.max(...rest) + MAX_PEER_LEAD) {
    return `${r.peer} reports peer p${high}, but the other members of group ${r.group} name none above p${Math.max(...rest)}: a peer number that far ahead is refused`;
  }
  return undefined;
}

function maxEpoch(reports: RejoinReport[]): number | undefined {
  const members = reports.filter((x) => x.report.member);
  return members.length ? Math.max(...members.map((x) => x.report.epoch)) : undefined;
}

/**
 * Member reports whose epoch is more than MAX_EPOCH_LEAD above every other member report's (forged or confused),
 * not counting reports of the same ring and epoch.
 */
export function outliers(reports: RejoinReport[]): RejoinReport[] {
  return reports.filter((r) => {
    const top = maxEpoch(reports.filter((o) => o !== r && !sameRing(o, r)));
    return r.report.member && top !== undefined && r.report.epoch > top + MAX_EPOCH_LEAD;
  });
}

/** Both report membership of the same epoch with the same ring. */
function sameRing(a: RejoinReport, b: RejoinReport): boolean {
  if (!a.report.member || !b.report.member || a.report.epoch !== b.report.epoch) return false;
  const x = ringIds(a);
  const y = ringIds(b);
  return x.size === y.size && [...x].every((id) => y.has(id));
}

function ringIds(r: RejoinReport): Set<string> {
  return new Set(r.report.member ? r.report.ring.map((q) => masterIdOf(q.id)) : [r.peer]);
}

/**
 * Member reports whose ring no other reporter vouches for: some member reporter stands outside the ring, and none
 * of them names any of its ids in its own ring. Peer ids are minted by whoever holds the token, so a ring made
 * only of ids nobody else has seen is believed only when it has more reporters behind it than any other ring (ties
 * go to the other ring: a forger can always claim a newer epoch, never more real reporters).
 */
export function unvouched(reports: RejoinReport[]): RejoinReport[] {
  const members = reports.filter((r) => r.report.member);
  const alone = (r: RejoinReport): boolean => {
    const own = ringIds(r);
    const outside = members.filter((o) => !own.has(o.peer));
    return outside.length > 0 && !outside.some((o) => [...ringIds(o)].some((id) => own.has(id)));
  };
  const backers = (r: RejoinReport): number => members.filter((o) => ringIds(r).has(o.peer)).length;
  return members.filter((r) => alone(r) && members.some((o) => !ringIds(r).has(o.peer) && backers(o) >= backers(r)));
}

/** The member ids of the newest ring the reports name, and its epoch. */
export function newestRing(reports: Iterable<RejoinReport>): { epoch: number; ids: string[] } {
  let best: { epoch: number; ids: string[] } = { epoch: 0, ids: [] };
  const all = [...reports];
  const doubtful = unvouched(all);
  for (const r of all) {
    if (doubtful.includes(r)) continue;
    if (r.report.member && r.report.epoch > best.epoch) best = { epoch: r.report.epoch, ids: r.report.ring.map((q) => masterIdOf(q.id)) };
  }
  return best;
}

/**
 * Whether the rebuild need not wait any longer: every peer named in any reported ring has reported, and the
 * newest ring is not one member's word about itself alone (a one-member ring waits for the window: the others it
 * would leave out may still report).
 */
export function allReported(reports: Map<string, RejoinReport>): boolean {
  const ring = newestRing(reports.values());
  if (ring.ids.length === 0) return false;
  if (ring.ids.length === 1 && reports.size === 1) return false;
  for (const r of reports.values()) if (r.report.member && !r.report.ring.every((q) => reports.has(masterIdOf(q.id)))) return false;
  return true;
}

/** Plans the rebuilt group from every report received in its resume window. */
export function planRebuild(all: RejoinReport[]): RebuildPlan {
  const excluded: { peer: string; reason: string }[] = [];
  const far = outliers(all);
  for (const r of far) excluded.push({ peer: r.peer, reason: `its resume report claims epoch ${r.report.epoch}, far ahead of every other member's (refused)` });
  const lone = unvouched(all.filter((r) => !far.includes(r)));
  for (const r of lone) excluded.push({ peer: r.peer, reason: `its resume report names ring ${[...ringIds(r)].join(',')}, which no other member's ring shares and fewer members back (refused)` });
  const reports = all.filter((r) => !far.includes(r) && !lone.includes(r));
  const ring = newestRing(reports);
  const byId = new Map(reports.map((r) => [r.peer, r]));
  const members: string[] = [];
  const pending: string[] = [];
  for (const id of ring.ids) if (byId.has(id)) members.push(id);
  for (const r of [...reports].sort((a, b) => peerNumber(a.peer) - peerNumber(b.peer))) {
    if (members.includes(r.peer)) continue;
    if (!r.report.member) {
      pending.push(r.peer);
      continue;
    }
    // Left out of a newer ring: believed only when a majority of r's own ring (and at least EXCLUSION_QUORUM)
    // report newer rings without it. Only members of r's ring count: anyone else's word is a minted id's.
    const own = ringIds(r);
    const witnesses = reports.filter((w) => own.has(w.peer) && w.report.member && w.report.epoch > r.report.epoch && !ringIds(w).has(r.peer));
    if (witnesses.length >= Math.max(EXCLUSION_QUORUM, Math.floor(own.size / 2) + 1)) {
      excluded.push({ peer: r.peer, reason: `it was a member of epoch ${r.report.epoch}, but the group had re-formed without it by epoch ${ring.epoch} (as ${witnesses.map((w) => w.peer).sort((a, b) => peerNumber(a) - peerNumber(b)).join(', ')} report)` });
    } else {
      members.push(r.peer); // one reporter's word does not evict a member that is alive and reporting
    }
  }
  // Commits of the newest epoch that some member saw: every member finished those operations.
  const keys = new Set<string>();
  for (const r of reports) if (r.report.member && r.report.epoch === ring.epoch) for (const k of r.report.committed) keys.add(k);
  const commits: { to: string; key: string }[] = [];
  for (const id of members) if (byId.get(id)!.report.epoch === ring.epoch) for (const key of keys) commits.push({ to: id, key });
  // Shared state: the newest revision of each layout, and the peers that hold it.
  const states = new Map<string, { revision: number; peers: string[] }>();
  let seq = 0;
  for (const r of reports) {
    seq = Math.max(seq, r.report.lastSync);
    if (!members.includes(r.peer)) continue;
    for (const s of r.report.states) {
      const cur = states.get(s.layout);
      if (!cur || s.revision > cur.revision) states.set(s.layout, { revision: s.revision, peers: [r.peer] });
      else if (s.revision === cur.revision) cur.peers.push(r.peer);
    }
  }
  for (const s of states.values()) s.peers.sort();
  const syncing = reports.filter((r) => r.report.sync && members.includes(r.peer));
  let stateCommit: RebuildPlan['stateCommit'];
  let inProgress: { id: number; attempt: number } | undefined;
  if (syncing.length > 0) {
    const id = Math.max(...syncing.map((r) => r.report.sync!.id)) || seq + 1;
    const committer = reports.find((r) => id > 0 && r.report.committedSync >= id);
    if (committer) {
      // The master had committed it (every member had executed it); some never heard.
      stateCommit = { to: syncing.filter((r) => r.report.sync!.id === id).map((r) => r.peer), sync: id, revision: committer.report.committedRevision };
    } else {
      inProgress = { id, attempt: Math.max(...syncing.map((r) => r.report.sync!.attempt)) };
    }
    seq = Math.max(seq, id);
  }
  // Barrier votes completed in the newest epoch: every member of it took part in each.
  const current = members.filter((id) => byId.get(id)!.report.epoch === ring.epoch);
  const votes = (id: string) => byId.get(id)!.report.votes ?? 0;
  const maxVotes = Math.max(0, ...current.map(votes));
  const voteCatchUp = current.filter((id) => votes(id) < maxVotes);
  return { fromEpoch: ring.epoch, members, pending, excluded, commits, voteCatchUp, stateCommit, sync: { seq, states, inProgress } };
}

/** The number in a peer id (`p12` -> 12), so that a master's new ids never collide with reported ones. */
export function peerNumber(id: string): number {
  const n = Number(/^p([0-9]+)/.exec(id)?.[1]);
  return Number.isSafeInteger(n) ? n : 0;
}
