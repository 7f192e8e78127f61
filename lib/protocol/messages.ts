/**
 * Every control-plane message, declared once: {@link MESSAGES} is both what an incoming frame is checked
 * against (required fields, types, ranges, no unknown fields; anything else is a ProtocolError naming the
 * problem) and, through {@link Msg}, the TypeScript type of each message. docs/protocol.md describes them.
 */
import type { SyncDecision, SyncStrategy } from '../shared-state/election';
import type { EntryDigest } from '../shared-state/hash';
import { ProtocolError } from '../errors';
import { MessageOf, Schema, bool, bytes, checkMessage, custom, oneOf, opt, peers, preview, str, uint } from './schema';
import { checkStateEntries, checkSyncDecision } from './state';

export type { WirePeer } from './schema';

/** Bumped on any incompatible change; the handshake refuses a different version. */
export const PROTOCOL_VERSION = 1;
/** First field of the first frame, so a stray client of another protocol is told apart from a bad TCCL peer. */
export const PROTOCOL_NAME = 'tccl';

const STRATEGIES: readonly SyncStrategy[] = ['enforcePopular', 'sendOnly', 'receiveOnly'];
const CODE = str(32);
const MESSAGE = str(4096);

/** The schema of every message type, by its `t`. */
export const MESSAGES = {
  // ---- peer -> master ----
  hello: { proto: str(16), version: uint(0xffff), nonce: bytes(32), session: opt(str(64)), secret: opt(bytes(32)) },
  register: { proof: opt(bytes(32)), peerGroup: uint(0xffffffff), dataPort: uint(65535, 1), advertiseAddress: opt(str(255)), label: opt(str(128)) },
  vote: { id: uint() },
  ack: { epoch: uint() },
  done: { epoch: uint(), key: str(64) },
  fail: { epoch: uint(), key: str(64), code: CODE, message: MESSAGE },
  lost: { epoch: uint(), peer: str(300), message: MESSAGE },
  bye: {},
  stateReport: {
    attempt: uint(),
    strategy: oneOf(STRATEGIES),
    revision: uint(),
    entries: custom<Record<string, EntryDigest>>('a map of entry digests', checkStateEntries),
  },
  stateDone: { sync: opt(uint()), attempt: uint(), ok: bool(), code: opt(CODE), message: opt(MESSAGE) },
  // ---- both ways ----
  hb: {},
  // ---- master -> peer ----
  challenge: { version: uint(0xffff), nonce: bytes(32), auth: bool() },
  welcome: {
    peer: str(64), session: str(64), secret: bytes(32), proof: opt(bytes(32)), observedHost: str(255),
    heartbeatIntervalMs: uint(3_600_000, 1), peerTimeoutMs: uint(3_600_000, 1), resumed: bool(),
  },
  error: { code: CODE, message: MESSAGE },
  ring: { epoch: uint(), index: uint(), peers: peers(), ticket: bytes(16), reason: MESSAGE },
  ready: { epoch: uint() },
  voteResult: { id: uint(), ok: bool(), epoch: uint(), accepted: uint(), code: opt(CODE), message: opt(MESSAGE) },
  opCommit: { epoch: uint(), key: str(64) },
  opAbort: { epoch: uint(), key: str(64), code: CODE, message: MESSAGE },
  world: { worldSize: uint(), groupWorldSize: uint(), peerGroups: uint(), pending: uint() },
  dropped: { reason: MESSAGE },
  stateDecision: { sync: uint(), attempt: uint(), epoch: uint(), tag: uint(), decision: custom<SyncDecision>('a sync decision', checkSyncDecision) },
  stateRetry: { sync: uint(), attempt: uint(), reason: MESSAGE },
  stateCommit: { sync: uint(), revision: uint() },
  stateFail: { sync: uint(), code: CODE, message: MESSAGE },
} as const satisfies Record<string, Schema>;

export type MessageType = keyof typeof MESSAGES;
/** The message of type `K` (or the union of those of a union of types), derived from its schema. */
export type Msg<K extends MessageType> = K extends MessageType ? MessageOf<K, (typeof MESSAGES)[K]> : never;
/** Any message. */
export type AnyMsg = Msg<MessageType>;

/** What a registered peer may send the master. */
export const PEER_MESSAGES = ['vote', 'ack', 'done', 'fail', 'lost', 'bye', 'stateReport', 'stateDone'] as const;
export type PeerMsg = Msg<(typeof PEER_MESSAGES)[number]>;
/** What the master sends a registered peer (after the handshake). */
export const MASTER_MESSAGES = [
  'ring', 'ready', 'voteResult', 'opCommit', 'opAbort', 'world', 'dropped', 'error',
  'stateDecision', 'stateRetry', 'stateCommit', 'stateFail',
] as const;
export type MasterMsg = Msg<(typeof MASTER_MESSAGES)[number]>;

/**
 * Checks a decoded frame against the schema of its type and returns it typed. `allowed` restricts the types
 * acceptable at this point of the conversation (e.g. only `hello` as a first frame).
 */
export function validateMessage<K extends MessageType = MessageType>(msg: Record<string, unknown>, allowed?: readonly K[]): Msg<K> {
  const type = msg.t;
  if (typeof type !== 'string') throw new ProtocolError('Control message has no string type field "t"');
  if (!Object.hasOwn(MESSAGES, type)) throw new ProtocolError(`Unknown control message type ${preview(type)}`);
  if (allowed && !allowed.includes(type as K)) {
    throw new ProtocolError(`Unexpected "${type}" message here; expected ${allowed.map((a) => `"${a}"`).join(' or ')}`);
  }
  checkMessage(type, MESSAGES[type as MessageType], msg);
  return msg as Msg<K>;
}

// Names the rest of the code used before the types were derived from the schema.
export type Hello = Msg<'hello'>;
export type Register = Msg<'register'>;
export type Ring = Msg<'ring'>;
export type StateReportMsg = Msg<'stateReport'>;
export type StateDecisionMsg = Msg<'stateDecision'>;
