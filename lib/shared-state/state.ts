/**
 * The state every peer of a group must hold bit for bit: named TypedArray entries plus a revision counter.
 *
 * @example
 * ```ts
 * import { SharedState } from 'tccl';
 * const state = new SharedState({
 *   weights: new Float32Array(1 << 20),
 *   'adam.m': { data: new Uint16Array(1 << 20), dtype: 'bfloat16' },
 *   rngCounters: { data: new BigUint64Array(8), allowContentInequality: true }, // per-peer, never synced
 * });
 * state.revision = 0;
 * // each training step: update the entries, then
 * state.revision++;
 * await comm.syncSharedState(state);          // peers that differ receive the popular state
 * await state.save('/ckpt/state.tccl');       // atomic checkpoint; SharedState.load() verifies it
 * ```
 */
import { DType, TensorArray, dtypeBytes, resolveDType } from '../dtype';
import { InvalidArgumentError, StateError } from '../errors';
import { loadCheckpoint, saveCheckpoint } from './checkpoint';
import { EntryInit, STATE_ERROR_CODES, StateEntry, checkKey, checkRevision } from './entry';

export { EntryInit, STATE_ERROR_CODES, StateEntry, checkRevision };

/** Named entries (TypedArrays, dtype explicit for float16/bfloat16) plus a revision; see the module example. */
export class SharedState {
  private readonly map = new Map<string, StateEntry>();
  private revision_ = 0;

  constructor(entries: Record<string, EntryInit> = {}, options: { revision?: number } = {}) {
    for (const [k, v] of Object.entries(entries)) this.set(k, v);
    this.revision = options.revision ?? 0;
  }

  /** Increase it by exactly one before every sync (see docs/shared-state.md, "Revisions"). */
  get revision(): number {
    return this.revision_;
  }

  set revision(v: number) {
    this.revision_ = checkRevision(v);
  }

  /** Adds or replaces an entry. */
  set(key: string, init: EntryInit, options: { dtype?: DType; allowContentInequality?: boolean } = {}): this {
    checkKey(key);
    const o = ArrayBuffer.isView(init) ? { data: init as TensorArray } : init;
    if (typeof o !== 'object' || o === null) throw new InvalidArgumentError(`Expected entry "${key}" to be a TypedArray or {data, dtype}`);
    const dtype = resolveDType(o.data, (o as { dtype?: DType }).dtype ?? options.dtype, `entry "${key}"`);
    const allow = Boolean((o as { allowContentInequality?: boolean }).allowContentInequality ?? options.allowContentInequality);
    this.map.set(key, Object.freeze({ key, data: o.data, dtype, allowContentInequality: allow }));
    return this;
  }

  /** The array of an entry (undefined when absent). */
  get<T extends TensorArray = TensorArray>(key: string): T | undefined {
    return this.map.get(key)?.data as T | undefined;
  }

  /** The entry record (array, dtype, flags). */
  entry(key: string): StateEntry | undefined {
    return this.map.get(key);
  }

  has(key: string): boolean {
    return this.map.has(key);
  }

  delete(key: string): boolean {
    return this.map.delete(key);
  }

  /** Keys in insertion order. */
  keys(): string[] {
    return [...this.map.keys()];
  }

  /** Entries in insertion order. */
  entries(): StateEntry[] {
    return [...this.map.values()];
  }

  get size(): number {
    return this.map.size;
  }

  /** Total bytes of every entry. */
  get byteLength(): number {
    let n = 0;
    for (const e of this.map.values()) n += e.data.byteLength;
    return n;
  }

  /** The raw bytes of an entry, as a Uint8Array view over the live array (no copy). */
  bytes(key: string): Uint8Array {
    const e = this.map.get(key);
    if (!e) throw new StateError(STATE_ERROR_CODES.layout, `The shared state has no entry "${key}"`);
    return new Uint8Array(e.data.buffer, e.data.byteOffset, e.data.byteLength);
  }

  /**
   * Writes an atomic checkpoint: a temp file next to `path`, fsync, rename over `path`, fsync of the directory.
   * A crash leaves either the old file or the new one, never a mix. Never blocks the event loop on the data.
   */
  save(path: string): Promise<void> {
    return saveCheckpoint(this, path);
  }

  /** Reads and verifies a checkpoint written by {@link SharedState.save}; throws StateError when it is damaged. */
  static async load(path: string): Promise<SharedState> {
    const { revision, entries } = await loadCheckpoint(path);
    const state = new SharedState({}, { revision });
    for (const e of entries) state.set(e.key, e);
    return state;
  }
}

/** Element size in bytes of an entry's dtype. */
export function entryElementBytes(e: StateEntry): number {
  return dtypeBytes(e.dtype);
}
