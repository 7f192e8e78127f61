/**
 * Every control-plane message, declared once: {@link MESSAGES} is both what an incoming frame is checked
 * against (required fields, types, ranges, no unknown fields; anything else is a ProtocolError naming the
 * problem) and, through {@link Msg}, the TypeScript type of each message. docs/protocol.md describes them.
 */
import type { SyncDecision, SyncStrategy } from '../shared-state/election';
import type { EntryDigest } from '../shared-state/hash';
import { ProtocolError } from '../errors';
import { MessageOf, Schema, bool, bytes, checkMessage, custom, oneOf, opt, peers, preview, str, uint } from './schema';
import { ResumeReport, checkResumeReport } from './resume';
import { checkStateEntries, checkSyncDecision } from './state';
import { PeerStats, checkPeerStats } from './stats';
import { indexPairs, measuredLinks, num, peerIds, wireMatrix } from './topology';

export type { WirePeer } from './schema';

/** Bumped on any incompatible change; the handshake refuses a different version. */
export const PROTOCOL_VERSION = 4;
/** First field of the first frame, so a stray client of another protocol is told apart from a bad TCCL peer. */
export const PROTOCOL_NAME = 'tccl';

const STRATEGIES: readonly SyncStrategy[] = ['enforcePopular', 'sendOnly', 'receiveOnly'];
const CODE = str(32);
const MESSAGE = str(4096);

/** Largest probe a `tccl check` may ask of each member (bytes). */
export const MAX_PROBE_BYTES = 64 << 20;

/** A member as `checkResult` reports it: where it is and whether it could dial the checker's port. */
export interface CheckedMember {
  id: string;
  label: string;
  host: string;
  port: number;
  ok: boolean;
  message: string;
}

function checkMembers(v: unknown): string | undefined {
  if (!Array.isArray(v) || v.length > 4096) return 'not an array of at most 4096 members';
  for (const m of v) {
    if (typeof m !== 'object' || m === null) return 'a member is not a map';
    const { id, label, host, port, ok, message } = m as Record<string, unknown>;
    if (typeof id !== 'string' || id.length > 300 || typeof label !== 'string' || label.length > 128) return 'bad id or label';
    if (typeof host !== 'string' || host.length > 255 || typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) return 'bad address';
    if (typeof ok !== 'boolean' || typeof message !== 'string' || message.length > 4096) return 'bad outcome';
    if (Object.keys(m).length !== 6) return 'a member has unknown fields';
  }
  return undefined;
}

function checkKeys(v: unknown): string | undefined {
  if (!Array.isArray(v) || v.length > 65536) return 'not an array of at most 65536 keys';
  return v.every((k) => k instanceof Uint8Array && k.length === 32) ? undefined : 'a key is not 32 bytes';
}

/** The schema of every message type, by its `t`. */
export const MESSAGES = {
  // ---- peer -> master ----
  // A resuming peer names its session here, and (with a token) proves it with `secret` in the sealed `register`.
  hello: { proto: str(16), version: uint(0xffff), nonce: bytes(32), session: opt(str(64)), secret: opt(bytes(32)) },
  register: {
    secret: opt(bytes(32)), peerGroup: uint(0xffffffff), dataPort: uint(65535, 1), advertiseAddress: opt(str(255)), label: opt(str(128)),
    // What a resuming peer holds, for a master that does not know its session (lib/protocol/resume.ts).
    resume: opt(custom<ResumeReport>('a resume report', checkResumeReport)),
    // 'auto': the master may announce admission votes on this peer's commits (lib/master/admission.ts).
    admission: opt(oneOf(['auto', 'manual'] as const)),
    // The peer's X25519 identity public key for this run, announced with the ring (lib/peer/identity.ts).
    identity: opt(bytes(32)),
  },
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
  probeDone: { id: uint(), ok: bool(), message: opt(MESSAGE) },
  topoStart: { epoch: uint(), maxAgeMs: uint() },
  topoReport: {
    epoch: uint(), bytes: uint(), minGain: num(0, 1), links: measuredLinks(), measureMs: uint(), measureBytes: uint(),
    code: opt(CODE), message: opt(MESSAGE),
  },
  // ---- `tccl check` -> master, in place of register ----
  check: { peerGroup: uint(0xffffffff), port: uint(65535, 1), advertiseAddress: opt(str(255)), nonce: bytes(16), probeBytes: uint(MAX_PROBE_BYTES) },
  // ---- both ways: the key exchange of a run with a token (lib/protocol/secure.ts), then every frame is sealed ----
  kx: { pub: bytes(32), proof: bytes(32) },
  // A sealed frame failed its tag here: the sender closes next, and the session waits for a reconnect (secure.ts).
  integrity: { message: MESSAGE },
  // ---- both ways (a peer's heartbeats carry its counters, and for how long its JavaScript thread has been busy) ----
  hb: { stats: opt(custom<Partial<PeerStats>>('a map of peer counters', checkPeerStats)), busy: opt(uint()) },
  // ---- master -> peer ----
  challenge: { version: uint(0xffff), nonce: bytes(32), auth: bool() },
  welcome: {
    peer: str(64), session: str(64), secret: bytes(32), observedHost: str(255),
    heartbeatIntervalMs: uint(3_600_000, 1), peerTimeoutMs: uint(3_600_000, 1), resumed: bool(),
  },
  error: { code: CODE, message: MESSAGE },
  // keys: each member's identity public key, in ring order, where every member registered one.
  ring: { epoch: uint(), index: uint(), peers: peers(), ticket: bytes(16), reason: MESSAGE, keys: opt(custom<Uint8Array[]>('a list of 32-byte public keys', checkKeys)) },
  ready: { epoch: uint() },
  voteResult: { id: uint(), ok: bool(), epoch: uint(), accepted: uint(), code: opt(CODE), message: opt(MESSAGE) },
  // admit: every member votes pending peers in before its next operation (lib/peer/admission.ts).
  opCommit: { epoch: uint(), key: str(64), admit: opt(bool()) },
  opAbort: { epoch: uint(), key: str(64), code: CODE, message: MESSAGE },
  // pendingPeers: the first 16 pending peers, `id` or `id label`, for error messages (waitForPeers).
  world: { worldSize: uint(), groupWorldSize: uint(), peerGroups: uint(), pending: uint(), pendingPeers: opt(peerIds()) },
  dropped: { reason: MESSAGE },
  stateDecision: { sync: uint(), attempt: uint(), epoch: uint(), tag: uint(), decision: custom<SyncDecision>('a sync decision', checkSyncDecision) },
  stateRetry: { sync: uint(), attempt: uint(), reason: MESSAGE },
  stateCommit: { sync: uint(), revision: uint() },
  stateFail: { sync: uint(), code: CODE, message: MESSAGE },
  probe: { id: uint(), host: str(255), port: uint(65535, 1), nonce: bytes(16), bytes: uint(MAX_PROBE_BYTES) },
  topoPlan: { epoch: uint(), pairs: indexPairs() },
  topoResult: {
    epoch: uint(), ok: bool(), applied: bool(), oldOrder: peerIds(), newOrder: peerIds(), predictedBeforeMs: num(), predictedAfterMs: num(),
    exact: bool(), solveMs: num(), matrix: opt(wireMatrix()), code: opt(CODE), message: opt(MESSAGE),
  },
  checkResult: {
    observedHost: str(255), dialBack: bool(), dialBackMs: uint(), dialBackError: opt(MESSAGE),
    members: custom<CheckedMember[]>('a list of probed members', checkMembers),
  },
} as const satisfies Record<string, Schema>;

export type MessageType = keyof typeof MESSAGES;
/** The message of type `K` (or the union of those of a union of types), derived from its schema. */
export type Msg<K extends MessageType> = K extends MessageType ? MessageOf<K, (typeof MESSAGES)[K]> : never;
/** Any message. */
export type AnyMsg = Msg<MessageType>;

/** What a registered peer may send the master. */
export const PEER_MESSAGES = ['vote', 'ack', 'done', 'fail', 'lost', 'bye', 'stateReport', 'stateDone', 'probeDone', 'topoStart', 'topoReport'] as const;
export type PeerMsg = Msg<(typeof PEER_MESSAGES)[number]>;
/** What the master sends a registered peer (after the handshake). */
export const MASTER_MESSAGES = [
  'ring', 'ready', 'voteResult', 'opCommit', 'opAbort', 'world', 'dropped', 'error',
  'stateDecision', 'stateRetry', 'stateCommit', 'stateFail', 'probe', 'topoPlan', 'topoResult',
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
export type Check = Msg<'check'>;
export type Ring = Msg<'ring'>;
export type StateReportMsg = Msg<'stateReport'>;
export type StateDecisionMsg = Msg<'stateDecision'>;
