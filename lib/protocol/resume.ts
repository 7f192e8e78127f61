/**
 * What a peer tells a master that does not know its session (a restarted master, or a standby that took over):
 * everything the master needs to rebuild the peer's group from the peers' side alone (docs/master.md, "Restart
 * and fail-over"). Sent as the optional `resume` field of `register`, next to the session id and secret of
 * `hello`. The session secret is derived from the run token, so any master of the run can check it.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { preview } from './schema';

/** A peer's last committed shared-state sync of one state layout. */
export interface ResumeState {
  /** Hash of the state's sorted keys (lib/master/sync.ts `layoutOf`), 16 hex digits. */
  layout: string;
  /** The revision that sync committed. */
  revision: number;
}

/** A peer's view of its group when it lost the master. */
export interface ResumeReport {
  /** The newest epoch this peer installed (0: it was still pending). */
  epoch: number;
  /** Whether it is in that epoch's ring (false: it waits to be voted in). */
  member: boolean;
  /** That ring, in order (empty when pending). */
  ring: { id: string; host: string; port: number }[];
  /** Operations of `epoch` it saw committed (the newest ones), so a commit that reached only some peers completes. */
  committed: string[];
  /** Highest shared-state sync number it has seen. */
  lastSync: number;
  /** Highest sync number it saw committed. */
  committedSync: number;
  /** The revision of that committed sync. */
  committedRevision: number;
  /** A sync it is in the middle of: its number (0 before the master numbered it) and attempt. */
  sync?: { id: number; attempt: number };
  /** Its last committed sync per state layout (for the revision rule). */
  states: ResumeState[];
  /** Barrier votes (nobody accepted) completed in `epoch`: fewer than another member's means a result was cut off. */
  votes?: number;
}

/** Most committed keys and state layouts one report carries. */
export const MAX_RESUME_KEYS = 256;
const HEX16 = /^[0-9a-f]{16}$/;

function isUint(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Checks the structure of a `resume` field; returns what is wrong, or undefined. */
export function checkResumeReport(v: unknown): string | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v) || ArrayBuffer.isView(v)) return 'resume must be a map';
  const r = v as Record<string, unknown>;
  const fields = ['epoch', 'member', 'ring', 'committed', 'lastSync', 'committedSync', 'committedRevision', 'sync', 'states', 'votes'];
  if (r.votes !== undefined && !isUint(r.votes)) return 'resume.votes must be a non-negative integer';
  for (const k of Object.keys(r)) if (!fields.includes(k)) return `unknown resume field ${preview(k)}`;
  for (const k of ['epoch', 'lastSync', 'committedSync', 'committedRevision']) if (!isUint(r[k])) return `resume.${k} must be a non-negative integer`;
  if (typeof r.member !== 'boolean') return 'resume.member must be a boolean';
  if (!Array.isArray(r.ring) || r.ring.length > 65536) return 'resume.ring must be an array of peers';
  for (const p of r.ring as unknown[]) {
    if (typeof p !== 'object' || p === null) return 'resume.ring holds a non-map';
    const { id, host, port } = p as Record<string, unknown>;
    if (typeof id !== 'string' || id.length === 0 || id.length > 300 || typeof host !== 'string' || host.length > 255) return 'resume.ring holds a bad id or host';
    if (!isUint(port) || port < 1 || port > 65535 || Object.keys(p).length !== 3) return 'resume.ring holds a bad port or unknown fields';
  }
  if (!Array.isArray(r.committed) || r.committed.length > MAX_RESUME_KEYS) return `resume.committed must be an array of at most ${MAX_RESUME_KEYS} keys`;
  for (const k of r.committed as unknown[]) if (typeof k !== 'string' || k.length > 64) return `resume.committed holds a bad key ${preview(k)}`;
  if (r.sync !== undefined) {
    const s = r.sync as Record<string, unknown>;
    if (typeof s !== 'object' || s === null || !isUint(s.id) || !isUint(s.attempt) || Object.keys(s).length !== 2) return 'resume.sync must be { id, attempt }';
  }
  if (!Array.isArray(r.states) || r.states.length > MAX_RESUME_KEYS) return `resume.states must be an array of at most ${MAX_RESUME_KEYS} states`;
  for (const s of r.states as unknown[]) {
    const x = s as Record<string, unknown>;
    if (typeof s !== 'object' || s === null || typeof x.layout !== 'string' || !HEX16.test(x.layout) || !isUint(x.revision) || Object.keys(x).length !== 2) {
      return 'resume.states must hold { layout: 16 hex digits, revision }';
    }
  }
  return undefined;
}

/**
 * A session id names its peer, its group and its run: `p3.0.<run id>.<random>`. The master derives the secret
 * from the run token, so that a master that never saw the session (a restart) can still check it.
 */
export function makeSessionId(peer: string, group: number, run: string, random: string): string {
  return `${peer}.${group}.${run}.${random}`;
}

/** The parts of a session id, or undefined when it is not one. */
export function parseSessionId(session: string): { peer: string; group: number; run: string } | undefined {
  const m = /^(p[1-9][0-9]{0,14})\.([0-9]{1,10})\.([0-9a-f]{16})\.([0-9a-f]{8,24})$/.exec(session);
  if (!m) return undefined;
  const group = Number(m[2]);
  if (group > 0xffffffff) return undefined;
  return { peer: m[1], group, run: m[3] };
}

/** The secret of a session: HMAC(token, "tccl-session-v1" | session). Without a token the key is empty. */
export function sessionSecret(token: string | undefined, session: string): Buffer {
  return createHmac('sha256', token ?? '').update('tccl-session-v1').update(session).digest();
}

/** Whether `secret` is the secret of `session` under `token` (constant time). */
export function sessionSecretMatches(token: string | undefined, session: string, secret: Uint8Array | undefined): boolean {
  const expected = sessionSecret(token, session);
  if (!secret || secret.length !== expected.length) return false;
  return timingSafeEqual(expected, Buffer.from(secret.buffer, secret.byteOffset, secret.byteLength));
}

/** A state layout's identity as master and peers name it: a hash of its sorted keys (16 hex digits). */
export function stateLayout(entries: Record<string, unknown>): string {
  return createHash('sha256').update(JSON.stringify(Object.keys(entries).sort())).digest('hex').slice(0, 16);
}
