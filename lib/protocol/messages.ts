/**
 * Control-plane messages and their strict validation. Every incoming frame is checked against the schema of its
 * type (`t`): required fields, types, ranges, and no unknown fields. Anything else is a ProtocolError naming the
 * problem. Later features (shared state, ...) add their message types with {@link defineMessage}.
 */
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
  | { kind: 'peers' };

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
      return;
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
