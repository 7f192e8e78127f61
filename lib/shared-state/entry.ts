/**
 * What the pieces of the shared-state code agree on (entry records, error codes, key and revision checks), apart
 * from the SharedState class, so that the checkpoint code and the election need not import the class.
 */
import type { DType, TensorArray } from '../dtype';
import { InvalidArgumentError } from '../errors';

/** Error codes of {@link StateError} raised by the shared-state code (stable strings). */
export const STATE_ERROR_CODES = {
  /** A checkpoint file does not start with the TCCL state magic. */
  badMagic: 'STATE_CHECKPOINT_MAGIC',
  /** A checkpoint file has a format version this build cannot read. */
  badVersion: 'STATE_CHECKPOINT_VERSION',
  /** A checkpoint file's header is damaged (checksum, JSON, impossible sizes). */
  corrupt: 'STATE_CHECKPOINT_CORRUPT',
  /** A checkpoint file is shorter (or longer) than its header says. */
  truncated: 'STATE_CHECKPOINT_TRUNCATED',
  /** An entry's bytes do not hash to the expected value (checkpoint or transfer). */
  hashMismatch: 'STATE_HASH_MISMATCH',
  /** A peer's revision is not the one the group expects. */
  revision: 'STATE_REVISION',
  /** sendOnly peers hold different states. */
  sendOnlyConflict: 'STATE_SENDONLY_CONFLICT',
  /** No peer offers its state (every peer is receiveOnly, or every candidate was excluded). */
  noSource: 'STATE_NO_SOURCE',
  /** A peer's entries (keys, dtypes, byte lengths) do not match the elected state, so it cannot receive it. */
  layout: 'STATE_LAYOUT_MISMATCH',
} as const;

/** One entry of a {@link SharedState}. */
export interface StateEntry {
  readonly key: string;
  /** The live array; a sync writes into it only after the new bytes have been verified. */
  readonly data: TensorArray;
  readonly dtype: DType;
  /** Not hashed and never transferred: each peer may hold its own value (e.g. per-peer RNG state). */
  readonly allowContentInequality: boolean;
}

/** An entry as given to the constructor or {@link SharedState.set}. */
export type EntryInit = TensorArray | { data: TensorArray; dtype?: DType; allowContentInequality?: boolean };

const KEY_MAX = 1024;

/** Checks an entry key. */
export function checkKey(key: unknown): string {
  if (typeof key !== 'string' || key.length === 0 || key.length > KEY_MAX) {
    throw new InvalidArgumentError(`Expected a shared-state key to be a non-empty string of at most ${KEY_MAX} characters, got ${JSON.stringify(key)}`);
  }
  return key;
}

/** Checks a revision number. */
export function checkRevision(v: unknown, what = 'revision'): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new InvalidArgumentError(`Expected "${what}" to be a non-negative safe integer, got ${String(v)}`);
  }
  return v;
}
