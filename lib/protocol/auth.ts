/**
 * Run-token authentication: challenge-response with HMAC-SHA256, both ways. The token never crosses the wire.
 *
 * - the peer sends a random client nonce in `hello`; the master answers with a random master nonce;
 * - the peer proves it knows the token with HMAC(token, "tccl-peer" | masterNonce | clientNonce);
 * - the master proves it knows the token with HMAC(token, "tccl-master" | clientNonce | masterNonce),
 *   so a peer holding a token never joins a master that does not know it.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

export const NONCE_BYTES = 32;
export const PROOF_BYTES = 32;

export function makeNonce(): Buffer {
  return randomBytes(NONCE_BYTES);
}

function hmac(token: string, label: string, a: Uint8Array, b: Uint8Array): Buffer {
  return createHmac('sha256', token).update(label).update(a).update(b).digest();
}

/** The peer's proof of the token. */
export function peerProof(token: string, masterNonce: Uint8Array, clientNonce: Uint8Array): Buffer {
  return hmac(token, 'tccl-peer-v1', masterNonce, clientNonce);
}

/** The master's proof of the token. */
export function masterProof(token: string, clientNonce: Uint8Array, masterNonce: Uint8Array): Buffer {
  return hmac(token, 'tccl-master-v1', clientNonce, masterNonce);
}

/** Constant-time comparison of a received proof with the expected one. */
export function proofMatches(expected: Buffer, received: Uint8Array | undefined): boolean {
  if (!received || received.length !== expected.length) return false;
  return timingSafeEqual(expected, Buffer.from(received.buffer, received.byteOffset, received.byteLength));
}
