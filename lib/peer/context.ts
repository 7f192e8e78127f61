/** What every part of a Communicator reaches through: its group, data plane, log, master link and state. */
import type { DataPlane } from '../collective';
import type { Logger } from '../log';
import type { PeerMsg, PeerStats } from '../protocol';

export interface PeerContext {
  readonly peerGroup: number;
  readonly dataPlane: DataPlane;
  /** The current logger (it gains the peer id once registered). */
  readonly log: () => Logger;
  /** Sends a message to the master (nothing while disconnected: what matters is said again on resume). */
  send(m: PeerMsg): void;
  /** Counters sent to the master with every heartbeat (for its metrics and dashboard). */
  readonly stats: PeerStats;
  /** Why the communicator stopped working, if it did. */
  failure(): Error | undefined;
}
