/**
 * The master's side of the key exchange of a run with a token (lib/protocol/secure.ts): the peer's HMAC proof is
 * checked first, so a stranger costs no public-key work; then the master answers with its own ephemeral key and
 * proof and seals the connection from the next frame on.
 */
import type { IntegrityError } from '../errors';
import type { Logger } from '../log';
import { Connection, acceptKeyExchange, validateMessage } from '../protocol';

/** Handles the frame after `challenge`; returns why the peer is refused, or undefined once the connection is sealed. */
export function keyExchange(conn: Connection, token: string, clientNonce: Uint8Array, masterNonce: Uint8Array, raw: Record<string, unknown>): string | undefined {
  const m = validateMessage(raw, ['kx', 'register', 'check']);
  if (m.t !== 'kx') return 'no run token given';
  const done = acceptKeyExchange(token, clientNonce, masterNonce, m);
  if (!done) return 'wrong run token';
  conn.send(done.reply);
  conn.secure(done.keys);
  return undefined;
}

/**
 * A registered peer's control frame failed its tag (either way): someone on the path altered it, and could as
 * well have cut the connection. The peer reconnects and resumes its session; it is dropped (`lost`) only if it
 * has not within `timeoutMs` (`stillGone` says so), so corrupting its traffic alone evicts nobody.
 */
export function awaitReconnect(log: Logger, peer: string, reason: IntegrityError, timeoutMs: number, stillGone: () => boolean, lost: (why: string) => void): void {
  log.warn('control frame failed its integrity check; waiting for the peer to reconnect', { peer, err: reason, timeoutMs });
  setTimeout(() => {
    if (stillGone()) lost(`control connection failed an integrity check (${reason.message}) and the peer did not reconnect within ${timeoutMs} ms`);
  }, timeoutMs).unref();
}
