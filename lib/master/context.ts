/**
 * What the pieces of the master's state machine share: the peer record, and the context a group and its
 * shared-state sync act through (clock, randomness, the event feed, and the two ways to act on the world:
 * send a message, drop a peer). Nothing here touches a socket or a timer.
 */
import type { MasterMsg } from '../protocol';
import type { LinkMatrix, SolveOptions } from '../topology/solver';
import { formatHostPort } from '../validate';
import type { Feed } from './feed';

/** A registered peer as the master knows it. */
export interface Peer {
  /** The master's id for it (`p1`, `p2`, ...), unique over the master's life. */
  readonly id: string;
  readonly group: number;
  /** Its data-plane address. */
  readonly host: string;
  readonly port: number;
  readonly label?: string;
  /** Its X25519 identity public key for this run, announced to its group with the ring (lib/peer/identity.ts). */
  readonly identity?: Uint8Array;
  /** It connected with `admission: 'auto'`: the master may announce admission votes to it (admission.ts). */
  readonly autoAdmit?: boolean;
  /** Accepted into the group's ring (false while it waits for a vote). */
  member: boolean;
  dropped: boolean;
  /**
   * While its heartbeats say its JavaScript thread is busy (a long synchronous step): since when, by the master's
   * clock, and when that was last said. Its acknowledgement deadline waits meanwhile (group.ts).
   */
  busy?: { since: number; seen: number };
}

export interface GroupContext {
  readonly now: () => number;
  /** `n` random bytes (ring tickets). */
  readonly random: (n: number) => Uint8Array;
  readonly feed: Feed;
  /** How long a vote or a shared-state sync waits for every member. */
  readonly voteTimeoutMs: number;
  /** How long a member has to acknowledge a new ring before it is dropped. */
  readonly ackTimeoutMs: number;
  send(to: Peer, msg: MasterMsg): void;
  /** Ends a peer's session: it is told `dropped`, removed from its group, and the group re-forms. */
  drop(peer: Peer, reason: string, quiet?: boolean): void;
  /** The member or pending counts changed: every peer's `world` view is out of date. */
  worldChanged(): void;
  /** Solve a ring order off the control loop; the answer comes back as a `solved` event (topology.ts). */
  solve(job: SolveJob): void;
  /**
   * When a peer's control connection last carried a heartbeat (the `now` clock), to weigh a loss report
   * (evidence.ts). Absent: every accused peer counts as silent, and one report drops it.
   */
  readonly lastSeen?: (peer: string) => number | undefined;
}

/** A request to solve a group's ring order (coordinator effect `solve`). */
export interface SolveJob {
  group: number;
  /** The topology round it belongs to (a stale answer is ignored). */
  round: number;
  matrix: LinkMatrix;
  options: SolveOptions;
}

/** Data-plane id of a member: the master's id plus its address, readable in error messages. */
export function nativePeerId(p: { id: string; host: string; port: number }): string {
  return `${p.id}@${formatHostPort(p.host, p.port)}`;
}

/** The master's id inside a data-plane id (`p3@10.0.0.2:4000` -> `p3`). */
export function masterIdOf(nativeId: string): string {
  return nativeId.split('@')[0];
}

/** Keeps at most `max` keys, forgetting the oldest. */
export function rememberBounded<K, V>(map: Map<K, V>, key: K, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > max) map.delete(map.keys().next().value as K);
}
