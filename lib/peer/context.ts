/** What every part of a Communicator reaches through: its group, data plane, log, master link and state. */
import type { DataPlane } from '../collective';
import type { Logger } from '../log';
import type { IdentityKeys } from './identity';
import type { PeerMsg, PeerStats } from '../protocol';

export interface PeerContext {
  readonly peerGroup: number;
  readonly dataPlane: DataPlane;
  /** This process's identity keys, registered with the master when the run has a token (identity.ts). */
  readonly identity?: IdentityKeys;
  /** The current logger (it gains the peer id once registered). */
  readonly log: () => Logger;
  /** Sends a message to the master (nothing while disconnected: what matters is said again on resume). */
  send(m: PeerMsg): void;
  /** Counters sent to the master with every heartbeat (for its metrics and dashboard). */
  readonly stats: PeerStats;
  /** Why the communicator stopped working, if it did. */
  failure(): Error | undefined;
}
