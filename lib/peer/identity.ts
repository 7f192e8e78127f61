/**
 * This process's identity key pair for the data plane (docs/security.md, "Encryption"): an X25519 key made once
 * per process, whose public half a peer registers with the master over the sealed control connection and the
 * master announces to the peer's group with every `ring`. The data-plane handshake mixes it into its keys, so
 * only the member the master announced can complete a link (a token holder in the middle cannot).
 */
import { generateKeyPairSync } from 'node:crypto';
import type { LinkSecurity } from '../binding';
import { ProtocolError } from '../errors';
import { rawPublic } from '../protocol/secure';

export interface IdentityKeys {
  /** Raw X25519 public key (32 bytes). */
  publicKey: Buffer;
  /** Raw X25519 private key (32 bytes): never sent anywhere; handed to the native engine only. */
  privateKey: Buffer;
}

let mine: IdentityKeys | undefined;

/** This process's identity, made on first use. */
export function processIdentity(): IdentityKeys {
  if (!mine) {
    const { publicKey, privateKey } = generateKeyPairSync('x25519');
    const d = privateKey.export({ format: 'jwk' }).d;
    if (!d) throw new Error('node:crypto exported an X25519 private key without its scalar');
    mine = { publicKey: rawPublic(publicKey), privateKey: Buffer.from(d, 'base64url') };
  }
  return mine;
}

/**
 * The link keys for a ring the master announced: every member's public key in ring order, ours at `myIndex`
 * (a ring that names another key for this peer was not made from what it registered: a ProtocolError).
 */
export function linkSecurity(identity: IdentityKeys, keys: readonly Uint8Array[], memberCount: number, myIndex: number): LinkSecurity {
  if (keys.length !== memberCount) throw new ProtocolError(`Ring announces ${keys.length} identity keys for ${memberCount} members`);
  if (!identity.publicKey.equals(keys[myIndex])) throw new ProtocolError('Ring announces an identity key for this peer that is not the one it registered');
  return { identity: { publicKey: identity.publicKey, privateKey: identity.privateKey }, peerKeys: keys.map((k) => new Uint8Array(k)) };
}
