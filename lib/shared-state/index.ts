/** Shared state with bit parity: entries, checkpoints, hashing, the master's election and the peers' transfer. */
export { SharedState, StateEntry, EntryInit, STATE_ERROR_CODES } from './state';
export { CHECKPOINT_MAGIC, CHECKPOINT_VERSION } from './checkpoint';
export { hashState, hashBytes, hashHex, hashesOf, StateDigest, EntryDigest } from './hash';
export {
  electSharedState, electWithout, planTransfers, validateStateReport, syncedPeers, SYNC_STRATEGIES,
  SyncStrategy, PeerStateReport, ElectionOptions, PeerFailure, Transfer, SyncDecision,
} from './election';
export { executeSyncPlan, retryTransfers, retrySource, GroupFacts, ExecuteOptions, SyncResult } from './transfer';
