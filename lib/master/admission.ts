/**
 * Admission without ceremony, the master's half: when a group has pending peers and every member connected with
 * `admission: 'auto'`, the master marks one operation's `opCommit` with `admit: true`. Every member receives
 * that same commit, so the members agree on the boundary (after that operation) even when they disagree for a
 * moment on who is pending; each then votes before its next operation (lib/peer/admission.ts), the same vote as
 * `updateTopology`, which accepts every peer pending when it completes.
 *
 * One announcement per round: no second commit is marked until a vote completes (or the group empties), so
 * every member votes exactly once for it. The announcement survives a re-form that only loses a member (the
 * survivors still owe their vote, and the round is the same); a re-form that accepts peers (a vote, or the last
 * member left and the pending peers form the group) and a vote that times out end the round, so the next commit
 * with peers pending announces again.
 */
import type { Peer } from './context';

export class GroupAdmission {
  /** A commit was marked and the vote it asks for has not completed yet. */
  private announced = false;

  /** Whether the commit being sent now should ask the members to vote (and records that it did). */
  announce(members: readonly Peer[], pending: readonly Peer[]): boolean {
    if (this.announced || members.length === 0 || !pending.some((p) => !p.dropped)) return false;
    if (!members.every((p) => p.autoAdmit)) return false;
    this.announced = true;
    return true;
  }

  /** The round ended (peers accepted, the vote timed out, or the group emptied): the next pending peer is a new round. */
  reset(): void {
    this.announced = false;
  }
}
