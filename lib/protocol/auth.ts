/**
 * Run-token authentication: challenge-response with HMAC-SHA256, both ways; the token never crosses the wire.
 * The peer sends a random client nonce in `hello`, the master answers with a random master nonce, and each side
 * proves the token with an HMAC over both nonces and its ephemeral key (the key exchange: secure.ts), so a peer
 * holding a token never joins a master that does not know it.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';

export const NONCE_BYTES = 32;
export const PROOF_BYTES = 32;

export function makeNonce(): Buffer {
  return randomBytes(NONCE_BYTES);
}

/** Constant-time comparison of a received proof with the expected one. */
export function proofMatches(expected: Buffer, received: Uint8Array | undefined): boolean {
  if (!received || received.length !== expected.length) return false;
  return timingSafeEqual(expected, Buffer.from(received.buffer, received.byteOffset, received.byteLength));
}
