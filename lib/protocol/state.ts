/**
 * Checks of the structured fields of the shared-state messages: a report's entry digests and the master's sync
 * decision (structure, ids, and that every transfer fits its entry).
 */
import { DTYPE_CODES } from '../dtype';
import { preview } from './schema';

/** Most entries one report or decision may name (the frame size limit is the other bound). */
export const MAX_STATE_ENTRIES = 16384;
const STATE_KEY_MAX = 1024;
const HEX16 = /^[0-9a-f]{16}$/;
const PEER_ID_MAX = 64;

function isMap(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !ArrayBuffer.isView(v);
}
function isUint(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}
function badKey(k: string): boolean {
  return k.length === 0 || k.length > STATE_KEY_MAX || k === '__proto__';
}
function checkIdList(v: unknown, what: string): string | undefined {
  if (!Array.isArray(v) || v.length > 65536) return `${what} must be an array of peer ids`;
  for (const x of v) if (typeof x !== 'string' || x.length === 0 || x.length > PEER_ID_MAX) return `${what} holds a bad peer id ${preview(x)}`;
  return undefined;
}

/** Checks a map of entry digests `{ key: { hash, byteLength, dtype } }`. */
export function checkStateEntries(v: unknown): string | undefined {
  if (!isMap(v)) return 'entries must be a map';
  const keys = Object.keys(v);
  if (keys.length > MAX_STATE_ENTRIES) return `more than ${MAX_STATE_ENTRIES} entries`;
  for (const k of keys) {
    if (badKey(k)) return `bad entry key ${preview(k)}`;
    const e = v[k];
    if (!isMap(e) || Object.keys(e).length !== 3) return `entry ${preview(k)} must be exactly { hash, byteLength, dtype }`;
    if (typeof e.hash !== 'string' || !HEX16.test(e.hash)) return `entry ${preview(k)} has a bad hash ${preview(e.hash)}`;
    if (!isUint(e.byteLength)) return `entry ${preview(k)} has a bad byteLength ${preview(e.byteLength)}`;
    if (typeof e.dtype !== 'string' || !(e.dtype in DTYPE_CODES)) return `entry ${preview(k)} has an unknown dtype ${preview(e.dtype)}`;
  }
  return undefined;
}

/** Checks a SyncDecision as the master sends it (structure, ids, and that every transfer fits its entry). */
export function checkSyncDecision(v: unknown): string | undefined {
  if (!isMap(v)) return 'decision must be a map';
  const fields = ['revision', 'entries', 'upToDate', 'sources', 'outdated', 'failures', 'drop', 'transfers'];
  for (const k of Object.keys(v)) if (!fields.includes(k)) return `unknown decision field ${preview(k)}`;
  if (!isUint(v.revision)) return 'decision.revision must be a non-negative integer';
  const entries = checkStateEntries(v.entries);
  if (entries) return `decision.${entries}`;
  const ents = v.entries as Record<string, { byteLength: number }>;
  for (const f of ['upToDate', 'sources', 'drop']) {
    const e = checkIdList(v[f], `decision.${f}`);
    if (e) return e;
  }
  if (!isMap(v.outdated)) return 'decision.outdated must be a map';
  for (const [peer, keys] of Object.entries(v.outdated)) {
    if (peer.length === 0 || peer.length > PEER_ID_MAX) return `decision.outdated has a bad peer id ${preview(peer)}`;
    if (!Array.isArray(keys)) return `decision.outdated[${preview(peer)}] must be an array of keys`;
    for (const k of keys) if (typeof k !== 'string' || !Object.hasOwn(ents, k)) return `decision.outdated[${preview(peer)}] names an unknown entry ${preview(k)}`;
  }
  if (!isMap(v.failures)) return 'decision.failures must be a map';
  for (const [peer, f] of Object.entries(v.failures)) {
    if (peer.length === 0 || peer.length > PEER_ID_MAX) return `decision.failures has a bad peer id ${preview(peer)}`;
    if (!isMap(f) || typeof f.code !== 'string' || f.code.length > 64 || typeof f.message !== 'string' || f.message.length > 8192 || Object.keys(f).length !== 2) {
      return `decision.failures[${preview(peer)}] must be { code, message }`;
    }
  }
  if (!Array.isArray(v.transfers) || v.transfers.length > 1 << 20) return 'decision.transfers must be an array';
  for (const t of v.transfers as unknown[]) {
    if (!isMap(t) || Object.keys(t).length !== 6) return 'a transfer must be exactly { from, to, key, offset, length, stream }';
    if (typeof t.from !== 'string' || typeof t.to !== 'string' || !t.from || !t.to) return 'a transfer has a bad from/to';
    if (typeof t.key !== 'string' || !Object.hasOwn(ents, t.key)) return `a transfer names an unknown entry ${preview(t.key)}`;
    if (!isUint(t.offset) || !isUint(t.length) || !isUint(t.stream) || t.stream > 0xffffffff) return 'a transfer has a bad offset/length/stream';
    if (t.offset + t.length > ents[t.key].byteLength) return `a transfer of entry ${preview(t.key)} runs past its end`;
  }
  return undefined;
}
