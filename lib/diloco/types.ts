/**
 * What the DiLoCo optimizers need from a communicator. `Communicator` (lib/peer) satisfies it; so does any object
 * with the same methods, which keeps the optimizers framework- and transport-agnostic.
 */
import type { QuantizationOptions } from '../collective';

/** Result of one all-reduce as the optimizers read it. */
export interface CollectiveAllReduceResult {
  data: Float32Array;
  /** Number of peers whose inputs went into the result. */
  worldSize: number;
  bytesSent: number;
  bytesReceived: number;
}

/** Options the optimizers pass to an all-reduce. */
export interface CollectiveAllReduceOptions {
  /** 'avg' for pseudo-gradients; 'sum' and 'max' for the fallback state sync. */
  op: 'avg' | 'sum' | 'max';
  /** Distinguishes concurrent operations; all peers use the same tag for the same operation. */
  tag: number;
  quantization?: QuantizationOptions;
  /** With op 'avg': this peer's weight in the average (the tokens or inner steps behind its pseudo-gradient). */
  weight?: number;
}

/** What a shared-state sync reports (fields other than these are ignored). */
export interface CollectiveSyncResult {
  revision?: number;
  bytesSent?: number;
  bytesReceived?: number;
}

export type { SyncStrategy } from '../shared-state/election';
import type { SyncStrategy } from '../shared-state/election';

/**
 * The part of a communicator DiLoCo uses. `S` is the communicator's shared-state type.
 */
export interface Collective<S = unknown> {
  /** Peers in the current group, this one included. */
  readonly worldSize: number;
  /** In-place all-reduce; rejects with a retryable error (`retryable: true`, e.g. PeerLostError) when a peer dies. */
  allReduce(data: Float32Array, options: CollectiveAllReduceOptions): Promise<CollectiveAllReduceResult>;
  /** Makes `state` identical on every peer (the popular state wins); the revision advances by one per sync. */
  syncSharedState?(state: S, options: { strategy: SyncStrategy }): Promise<CollectiveSyncResult | void>;
  /** Admits pending peers (a group-wide vote and barrier). */
  updateTopology(): Promise<unknown>;
  /** True when peers wait to be admitted. */
  arePeersPending(): boolean | Promise<boolean>;
}

/**
 * Builds the communicator's shared-state object over the optimizer's entries. The optimizer keeps references
 * to the given arrays and reads/writes them in place, so the factory must wrap them without copying (or the
 * optimizer must be given the copies back through {@link StateBinding.entries}).
 */
export interface StateBinding<S = unknown> {
  /** The object passed to `syncSharedState`. */
  readonly state: S;
  /** The live arrays of the state, by key (after a sync they hold the group's values). */
  entries(): Record<string, Float32Array>;
  /** The state's revision. */
  revision: number;
}

/** Creates a {@link StateBinding} from named arrays and a starting revision. */
export type StateFactory<S = unknown> = (entries: Record<string, Float32Array>, revision: number) => StateBinding<S>;

/** The default state: a plain `{ revision, entries }` object. */
export interface PlainState {
  revision: number;
  entries: Record<string, Float32Array>;
}

export function plainStateFactory(entries: Record<string, Float32Array>, revision: number): StateBinding<PlainState> {
  const state: PlainState = { revision, entries };
  return {
    state,
    entries: () => state.entries,
    get revision() {
      return state.revision;
    },
    set revision(r: number) {
      state.revision = r;
    },
  };
}

/** A model's parameters: one array, a list of tensors or named tensors (Float32Array views into the model). */
export type ParamsInput = Float32Array | Float32Array[] | Record<string, Float32Array>;

/** Counters every optimizer reports. */
export interface CommStats {
  /** Bytes this peer sent in all-reduces and state syncs. */
  bytesSent: number;
  bytesReceived: number;
  /** All-reduces that completed. */
  allReduces: number;
  /** Operations retried after a lost peer. */
  retries: number;
  /** Largest number of bytes sent in one sync (one all-reduce). */
  peakBytesPerSync: number;
}
