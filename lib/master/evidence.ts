/**
 * Evidence before eviction: what the master does with a member's `lost` report (a ring neighbour it cannot
 * reach). One report is an accusation, not a verdict: the accuser may be the one whose network is broken.
 * Reports that arrive after their epoch ended count as evidence too ({@link Evidence.record}).
 * Pure logic over the accusations of one group, on the coordinator's clock (no sockets); the group carries out
 * the verdict and the feed records it with its evidence (docs/security.md, "Evidence before eviction").
 *
 * The rules, in order, for "A reports B lost":
 * 1. B's control connection is silent too (no heartbeat for `silentMs`): B is dropped.
 * 2. B was reported by two or more different members (within `windowMs`): B is dropped.
 * 3. A reported two or more different members, all alive on their control connections when reported: A is dropped
 *    (a member that cannot reach successive neighbours is the one at fault). Reports about members dropped since
 *    still count unless other evidence confirmed them (rules 1 and 2, or the accused leaving for a reason of its
 *    own: {@link Evidence.vindicate}), so an accuser cannot reset its count by getting its first target dropped.
 * 4. A second report between the same two members (either way), with nothing else against either: the master
 *    cannot tell the two ends of one broken link apart, and the group re-formed after the first report (with the
 *    two apart from four members on): the member making the repeated report is dropped. The tie is broken by who
 *    reports, never by whom: an accuser can only ever evict itself this way.
 * 5. Otherwise (a first report, both alive): nobody is dropped; the group re-forms (a new epoch re-dials every
 *    link, which is all a NAT's dropped idle connection needs), in an order where A and B are not neighbours when
 *    the group has four members or more (the run goes on without the suspect link, and the next report, if any,
 *    says which of the two is at fault by rules 2 and 3).
 *
 * @example
 * ```ts
 * const ev = new Evidence({ silentMs: 1500 });
 * ev.judge({ accuser: 'p1', accused: 'p2', members: ['p1', 'p2', 'p3'], now, lastSeen }); // { kind: 'reform', ... }
 * ```
 */
export interface EvidenceOptions {
  /** A member with no heartbeat for this long is silent on its control connection (ms). */
  silentMs: number;
  /** Reports older than this are forgotten (ms; default 10 minutes). */
  windowMs?: number;
}

/** What the master does about one report, and why. */
export type Verdict =
  | { kind: 'drop'; peer: string; why: string }
  | { kind: 'reform'; order: readonly string[]; why: string };

interface Report {
  accuser: string;
  accused: string;
  at: number;
  /** Other evidence (rule 1 or 2) bore the report out: it does not count against its accuser under rule 3. */
  confirmed?: boolean;
  /**
   * It arrived after its epoch ended: evidence for rules 2 and 3, not for rule 4 (otherwise a member could plant
   * late reports about a peer and then make that peer's own, honest report the "repeat").
   */
  late?: boolean;
}

/** At most this many reports are remembered per group. */
const MAX_REPORTS = 1024;

export class Evidence {
  private reports: Report[] = [];
  private readonly windowMs: number;

  constructor(private readonly options: EvidenceOptions) {
    this.windowMs = options.windowMs ?? 600_000;
  }

  /**
   * Records a report that arrived after its epoch ended (the group re-formed on another report of the same
   * failure): too late to act on, but evidence for the rules (when a link breaks every member that used it
   * reports it at once, and only the first is judged). Both must still be members.
   */
  record(r: { accuser: string; accused: string; members: readonly string[]; now: number }): void {
    if (!r.members.includes(r.accuser) || !r.members.includes(r.accused) || r.accuser === r.accused) return;
    this.reports.push({ accuser: r.accuser, accused: r.accused, at: r.now, late: true });
    if (this.reports.length > MAX_REPORTS) this.reports.shift();
  }

  /**
   * `peer` left the group for a reason of its own (its control connection closed or went silent, it left, its
   * JavaScript thread hung): every report that named it was right, and none counts against its accuser under rule 3
   * (under churn, a member reports a killed neighbour before the master sees the neighbour's connection close).
   */
  vindicate(peer: string): void {
    for (const x of this.reports) if (x.accused === peer) x.confirmed = true;
  }

  /**
   * Judges "accuser reports accused lost". `members`: the ring order; `lastSeen`: when a member's control
   * connection last carried a heartbeat (undefined: unknown, taken as silent).
   */
  judge(r: { accuser: string; accused: string; members: readonly string[]; now: number; lastSeen: (peer: string) => number | undefined }): Verdict {
    const { accuser, accused, members, now } = r;
    // Reports about members gone since are kept: they are the accuser's history under rule 3.
    this.reports = this.reports.filter((x) => now - x.at < this.windowMs && members.includes(x.accuser));
    const seen = r.lastSeen(accused);
    if (seen === undefined || now - seen > this.options.silentMs) {
      return { kind: 'drop', peer: accused, why: seen === undefined ? 'its control connection is not known to be alive' : `its control connection is silent too (${Math.round(now - seen)} ms)` };
    }
    this.reports.push({ accuser, accused, at: now });
    if (this.reports.length > MAX_REPORTS) this.reports.shift();
    const accusers = new Set(this.reports.filter((x) => x.accused === accused).map((x) => x.accuser));
    if (accusers.size >= 2) {
      for (const x of this.reports) if (x.accused === accused) x.confirmed = true;
      return { kind: 'drop', peer: accused, why: `reported lost by ${accusers.size} members (${[...accusers].join(', ')})` };
    }
    const targets = new Set(this.reports.filter((x) => x.accuser === accuser && !x.confirmed).map((x) => x.accused));
    if (targets.size >= 2) {
      return { kind: 'drop', peer: accuser, why: `it reported ${targets.size} different members lost (${[...targets].join(', ')}) that are alive: its own links are at fault` };
    }
    const pair = this.reports.filter((x) => !x.late && ((x.accuser === accuser && x.accused === accused) || (x.accuser === accused && x.accused === accuser)));
    if (pair.length >= 2) {
      return { kind: 'drop', peer: accuser, why: `the link between ${accuser} and ${accused} failed ${pair.length} times with both alive; the member reporting it again goes` };
    }
    const order = separate(members, accuser, accused);
    return { kind: 'reform', order, why: order === members ? 'a first report with both alive: re-forming to re-dial the links' : `a first report with both alive: re-forming with ${accuser} and ${accused} apart` };
  }
}

/** `members` with `b` moved so that it is not next to `a` in the ring (unchanged when that is impossible: under 4). */
export function separate(members: readonly string[], a: string, b: string): readonly string[] {
  const n = members.length;
  const adjacent = (order: readonly string[]) => {
    const i = order.indexOf(a);
    const j = order.indexOf(b);
    return (i - j + n) % n === 1 || (j - i + n) % n === 1;
  };
  if (n < 4 || !adjacent(members)) return members;
  const rest = members.filter((x) => x !== b);
  for (let k = 0; k <= rest.length; k++) {
    const order = [...rest.slice(0, k), b, ...rest.slice(k)];
    if (!adjacent(order)) return order;
  }
  return members;
}
