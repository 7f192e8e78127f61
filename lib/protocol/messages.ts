/**
 * Control-plane messages and their strict validation. Every incoming frame is checked against the schema of its
 * type (`t`): required fields, types, ranges, and no unknown fields. Anything else is a ProtocolError naming the
 * problem. Later features (shared state, ...) add their message types with {@link defineMessage}.
 */
import { DTYPE_CODES } from '../dtype';
import { ProtocolError } from '../errors';

/** Bumped on any incompatible change; the handshake refuses a different version. */
export const PROTOCOL_VERSION = 1;
/** First field of the first frame, so a stray client of another protocol is told apart from a bad TCCL peer. */
export const PROTOCOL_NAME = 'tccl';

export type FieldKind =
  | { kind: 'uint'; max?: number; min?: number }
  | { kind: 'string'; maxLength?: number; values?: readonly string[] }
  | { kind: 'bytes'; length?: number; maxLength?: number }
  | { kind: 'bool' }
  | { kind: 'peers' }
  /** A structured value checked by `check`, which returns what is wrong (or undefined when it is fine). */
  | { kind: 'custom'; what: string; check: (v: unknown) => string | undefined };

export interface FieldSpec {
  type: FieldKind;
  optional?: boolean;
}

export type Schema = Record<string, FieldSpec>;

const schemas = new Map<string, Schema>();

const uint = (max = Number.MAX_SAFE_INTEGER, min = 0): FieldSpec => ({ type: { kind: 'uint', max, min } });
const str = (maxLength = 1024): FieldSpec => ({ type: { kind: 'string', maxLength } });
const bytes = (length: number): FieldSpec => ({ type: { kind: 'bytes', length } });
const bool = (): FieldSpec => ({ type: { kind: 'bool' } });
const opt = (f: FieldSpec): FieldSpec => ({ ...f, optional: true });

/** Registers the schema of a message type (fails if the type exists). */
export function defineMessage(type: string, schema: Schema): void {
  if (schemas.has(type)) throw new Error(`Control message type "${type}" is already defined`);
  schemas.set(type, schema);
}

// Peer -> master
defineMessage('hello', { proto: str(16), version: uint(0xffff), nonce: bytes(32), session: opt(str(64)), secret: opt(bytes(32)) });
defineMessage('register', {
  proof: opt(bytes(32)),
  peerGroup: uint(0xffffffff),
  dataPort: uint(65535, 1),
  advertiseAddress: opt(str(255)),
  label: opt(str(128)),
});
defineMessage('vote', { id: uint() });
defineMessage('ack', { epoch: uint() });
defineMessage('done', { epoch: uint(), key: str(64) });
defineMessage('fail', { epoch: uint(), key: str(64), code: str(32), message: str(4096) });
defineMessage('lost', { epoch: uint(), peer: str(300), message: str(4096) });
defineMessage('bye', {});
// Both ways
defineMessage('hb', {});
// Master -> peer
defineMessage('challenge', { version: uint(0xffff), nonce: bytes(32), auth: bool() });
defineMessage('welcome', {
  peer: str(64),
  session: str(64),
  secret: bytes(32),
  proof: opt(bytes(32)),
  observedHost: str(255),
  heartbeatIntervalMs: uint(3_600_000, 1),
  peerTimeoutMs: uint(3_600_000, 1),
  resumed: bool(),
});
defineMessage('error', { code: str(32), message: str(4096) });
defineMessage('ring', { epoch: uint(), index: uint(), peers: { type: { kind: 'peers' } }, ticket: bytes(16), reason: str(4096) });
defineMessage('ready', { epoch: uint() });
defineMessage('voteResult', { id: uint(), ok: bool(), epoch: uint(), accepted: uint(), code: opt(str(32)), message: opt(str(4096)) });
defineMessage('opCommit', { epoch: uint(), key: str(64) });
defineMessage('opAbort', { epoch: uint(), key: str(64), code: str(32), message: str(4096) });
defineMessage('world', { worldSize: uint(), groupWorldSize: uint(), peerGroups: uint(), pending: uint() });
defineMessage('dropped', { reason: str(4096) });

// Shared-state sync (docs/shared-state.md, "Integration"). Peer -> master:
const STRATEGIES = ['enforcePopular', 'sendOnly', 'receiveOnly'] as const;
/** Most entries one report or decision may name (the frame size limit is the other bound). */
export const MAX_STATE_ENTRIES = 16384;
const STATE_KEY_MAX = 1024;
const HEX16 = /^[0-9a-f]{16}$/;
const PEER_ID_MAX = 64;
const custom = (what: string, check: (v: unknown) => string | undefined): FieldSpec => ({ type: { kind: 'custom', what, check } });

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

defineMessage('stateReport', {
  attempt: uint(),
  strategy: { type: { kind: 'string', maxLength: 16, values: STRATEGIES } },
  revision: uint(),
  entries: custom('a map of entry digests', checkStateEntries),
});
defineMessage('stateDone', { sync: opt(uint()), attempt: uint(), ok: bool(), code: opt(str(32)), message: opt(str(4096)) });
// Master -> peer:
defineMessage('stateDecision', { sync: uint(), attempt: uint(), epoch: uint(), tag: uint(), decision: custom('a sync decision', checkSyncDecision) });
defineMessage('stateRetry', { sync: uint(), attempt: uint(), reason: str(4096) });
defineMessage('stateCommit', { sync: uint(), revision: uint() });
defineMessage('stateFail', { sync: uint(), code: str(32), message: str(4096) });

/** A member of a ring as sent by the master. */
export interface WirePeer {
  id: string;
  host: string;
  port: number;
}

function checkField(type: string, name: string, spec: FieldSpec, v: unknown): void {
  const where = `"${name}" of a "${type}" message`;
  const t = spec.type;
  switch (t.kind) {
    case 'uint':
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < (t.min ?? 0) || v > (t.max ?? Number.MAX_SAFE_INTEGER)) {
        throw new ProtocolError(`Expected ${where} to be an integer from ${t.min ?? 0} to ${t.max}, got ${preview(v)}`);
      }
      return;
    case 'string':
      if (typeof v !== 'string' || v.length > (t.maxLength ?? 1024)) {
        throw new ProtocolError(`Expected ${where} to be a string of at most ${t.maxLength} characters, got ${preview(v)}`);
      }
      if (t.values && !t.values.includes(v)) {
        throw new ProtocolError(`Expected ${where} to be one of ${t.values.map((x) => JSON.stringify(x)).join(', ')}, got ${preview(v)}`);
      }
      return;
    case 'custom': {
      const why = t.check(v);
      if (why !== undefined) throw new ProtocolError(`Expected ${where} to be ${t.what}: ${why}`);
      return;
    }
    case 'bytes':
      if (!(v instanceof Uint8Array) || (t.length !== undefined && v.length !== t.length)) {
        throw new ProtocolError(`Expected ${where} to be ${t.length ?? 'some'} bytes, got ${preview(v)}`);
      }
      return;
    case 'bool':
      if (typeof v !== 'boolean') throw new ProtocolError(`Expected ${where} to be a boolean, got ${preview(v)}`);
      return;
    case 'peers':
      if (!Array.isArray(v) || v.length > 65536) throw new ProtocolError(`Expected ${where} to be an array of peers`);
      for (const p of v) {
        if (typeof p !== 'object' || p === null || Array.isArray(p)) throw new ProtocolError(`Expected ${where} to hold {id, host, port} maps`);
        const keys = Object.keys(p);
        if (keys.length !== 3) throw new ProtocolError(`Expected ${where} to hold exactly {id, host, port}`);
        checkField(type, `${name}[].id`, str(300), (p as WirePeer).id);
        checkField(type, `${name}[].host`, str(255), (p as WirePeer).host);
        checkField(type, `${name}[].port`, uint(65535, 1), (p as WirePeer).port);
      }
      return;
  }
}

function preview(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (v instanceof Uint8Array) return `${v.length} bytes`;
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '...' : v);
  if (typeof v === 'object') return Array.isArray(v) ? 'an array' : 'a map';
  return String(v);
}

/**
 * Checks a decoded frame against the schema of its type and returns it typed. `allowed` restricts the types
 * acceptable at this point of the conversation (e.g. only `hello` as a first frame).
 */
export function validateMessage<T = Record<string, unknown>>(msg: Record<string, unknown>, allowed?: readonly string[]): T {
  const type = msg.t;
  if (typeof type !== 'string') throw new ProtocolError('Control message has no string type field "t"');
  const schema = schemas.get(type);
  if (!schema) throw new ProtocolError(`Unknown control message type ${preview(type)}`);
  if (allowed && !allowed.includes(type)) {
    throw new ProtocolError(`Unexpected "${type}" message here; expected ${allowed.map((a) => `"${a}"`).join(' or ')}`);
  }
  for (const key of Object.keys(msg)) {
    if (key !== 't' && !(key in schema)) throw new ProtocolError(`Unknown field "${key}" in a "${type}" message`);
  }
  for (const [name, spec] of Object.entries(schema)) {
    const v = msg[name];
    if (v === undefined || v === null) {
      if (spec.optional) continue;
      throw new ProtocolError(`Missing field "${name}" in a "${type}" message`);
    }
    checkField(type, name, spec, v);
  }
  return msg as T;
}

// Typed views of the messages used by the master and the communicator.
export interface Hello { t: 'hello'; proto: string; version: number; nonce: Uint8Array; session?: string; secret?: Uint8Array }
export interface Register { t: 'register'; proof?: Uint8Array; peerGroup: number; dataPort: number; advertiseAddress?: string; label?: string }
export interface Challenge { t: 'challenge'; version: number; nonce: Uint8Array; auth: boolean }
export interface Welcome {
  t: 'welcome'; peer: string; session: string; secret: Uint8Array; proof?: Uint8Array; observedHost: string;
  heartbeatIntervalMs: number; peerTimeoutMs: number; resumed: boolean;
}
export interface ErrorMsg { t: 'error'; code: string; message: string }
export interface Ring { t: 'ring'; epoch: number; index: number; peers: WirePeer[]; ticket: Uint8Array; reason: string }
export interface Ready { t: 'ready'; epoch: number }
export interface VoteResult { t: 'voteResult'; id: number; ok: boolean; epoch: number; accepted: number; code?: string; message?: string }
export interface OpCommit { t: 'opCommit'; epoch: number; key: string }
export interface OpAbort { t: 'opAbort'; epoch: number; key: string; code: string; message: string }
export interface World { t: 'world'; worldSize: number; groupWorldSize: number; peerGroups: number; pending: number }
export interface Dropped { t: 'dropped'; reason: string }
export interface Vote { t: 'vote'; id: number }
export interface Ack { t: 'ack'; epoch: number }
export interface Done { t: 'done'; epoch: number; key: string }
export interface Fail { t: 'fail'; epoch: number; key: string; code: string; message: string }
export interface Lost { t: 'lost'; epoch: number; peer: string; message: string }
export interface StateReportMsg {
  t: 'stateReport'; attempt: number; strategy: 'enforcePopular' | 'sendOnly' | 'receiveOnly'; revision: number;
  entries: Record<string, { hash: string; byteLength: number; dtype: string }>;
}
export interface StateDoneMsg { t: 'stateDone'; sync?: number; attempt: number; ok: boolean; code?: string; message?: string }
export interface StateDecisionMsg { t: 'stateDecision'; sync: number; attempt: number; epoch: number; tag: number; decision: unknown }
export interface StateRetryMsg { t: 'stateRetry'; sync: number; attempt: number; reason: string }
export interface StateCommitMsg { t: 'stateCommit'; sync: number; revision: number }
export interface StateFailMsg { t: 'stateFail'; sync: number; code: string; message: string }
