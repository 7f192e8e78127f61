/**
 * Content hashes of shared-state entries: the native tree hash (XXH64 leaves over 1 MiB blocks, see
 * docs/kernels.md), computed on native threads; the same bytes give the same hash on every OS and CPU.
 */
import { native } from '../binding';
import type { DType } from '../dtype';
import type { StateEntry } from './entry';

/** What a peer knows of one entry: enough for the master to compare and to plan a transfer. */
export interface EntryDigest {
  /** contentHash as 16 lowercase hex digits. */
  hash: string;
  byteLength: number;
  dtype: DType;
}

/** The hashes of a state: what a peer reports to the master before a sync. */
export interface StateDigest {
  revision: number;
  /** Every entry except allowContentInequality ones (those are never hashed nor compared). */
  entries: Record<string, EntryDigest>;
}

/** 64-bit hash as 16 lowercase hex digits. */
export function hashHex(h: bigint): string {
  return h.toString(16).padStart(16, '0');
}

/** contentHash of any view's bytes, as hex. */
export async function hashBytes(view: ArrayBufferView): Promise<string> {
  return hashHex(await native().contentHash(new Uint8Array(view.buffer, view.byteOffset, view.byteLength)));
}

/**
 * Hashes every entry that takes part in syncs (allowContentInequality entries are left out). Entries are hashed
 * one after another on a native thread each (each hash itself is parallel inside).
 */
export async function hashState(state: { revision: number; entries(): readonly StateEntry[] }): Promise<StateDigest> {
  const entries: Record<string, EntryDigest> = {};
  for (const e of state.entries()) {
    if (e.allowContentInequality) continue;
    entries[e.key] = { hash: await hashBytes(e.data), byteLength: e.data.byteLength, dtype: e.dtype };
  }
  return { revision: state.revision, entries };
}

/** A simplified `{revision, entries: key -> hash hex}` view of a digest. */
export function hashesOf(d: StateDigest): { revision: number; entries: Record<string, string> } {
  return { revision: d.revision, entries: Object.fromEntries(Object.entries(d.entries).map(([k, v]) => [k, v.hash])) };
}
