/**
 * The control plane's encryption (docs/security.md, "Encryption"): an ephemeral X25519 exchange bound to the
 * run-token proofs, HKDF-SHA256 to one key per direction, then every frame sealed with AES-256-GCM under a
 * 64-bit counter nonce per direction.
 *
 * The exchange, after `hello` (client nonce cN) and `challenge` (master nonce mN):
 * 1. peer -> master `kx { pub: ePeer, proof: HMAC(token, "tccl-kx-peer-v1" | mN | cN | ePeer) }`;
 * 2. the master checks that HMAC first (cheap: a stranger costs it no public-key work), then makes its own
 *    ephemeral key and answers `kx { pub: eMaster, proof: HMAC(token, "tccl-kx-master-v1" | cN | mN | ePeer | eMaster) }`;
 * 3. both derive `HKDF-SHA256(ikm = X25519(e, e') | HMAC(token, "tccl-kx-psk-v1" | T), salt = SHA-256(T))`,
 *    T = cN | mN | ePeer | eMaster, with info "tccl-ctl-p2m-v1" and "tccl-ctl-m2p-v1" (32 bytes each);
 * 4. every later frame in both directions is sealed ({@link FrameSealer}).
 * Each proof covers the sender's ephemeral key, so someone without the token can neither swap a key nor
 * complete the exchange, and the token itself never crosses the wire.
 */
import {
  KeyObject, createCipheriv, createDecipheriv, createHash, createHmac, createPublicKey, diffieHellman, generateKeyPairSync, hkdfSync,
} from 'node:crypto';
import { AuthError, IntegrityError } from '../errors';
import { proofMatches } from './auth';

export const KEY_BYTES = 32;
export const TAG_BYTES = 16;
const HEADER_BYTES = 4;
/** A connection closes (and is re-established with new keys) long before a 64-bit counter could wrap. */
export const MAX_SEALED_FRAMES = 2 ** 48;

/** One key per direction. */
export interface SessionKeys {
  tx: Buffer;
  rx: Buffer;
}

// The DER prefix of an X25519 SubjectPublicKeyInfo: node:crypto takes raw keys only wrapped this way.
const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

/** An X25519 key pair; `pub` is the raw 32-byte public key. */
export interface X25519Pair {
  pub: Buffer;
  priv: KeyObject;
}

export function x25519Pair(): X25519Pair {
  const { publicKey, privateKey } = generateKeyPairSync('x25519');
  return { pub: rawPublic(publicKey), priv: privateKey };
}

export function rawPublic(key: KeyObject): Buffer {
  return (key.export({ format: 'der', type: 'spki' }) as Buffer).subarray(X25519_SPKI_PREFIX.length);
}

/** X25519(priv, pub) as raw bytes; throws AuthError for a key that gives no shared secret (a low-order point). */
export function x25519(priv: KeyObject, pub: Uint8Array): Buffer {
  if (pub.length !== KEY_BYTES) throw new AuthError(`Expected a ${KEY_BYTES}-byte X25519 public key, got ${pub.length} bytes`);
  try {
    const publicKey = createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, pub]), format: 'der', type: 'spki' });
    return diffieHellman({ privateKey: priv, publicKey });
  } catch (err) {
    throw new AuthError(`Key exchange failed: the other side's X25519 key is not usable (${(err as Error).message})`, { cause: err });
  }
}

function mac(token: string, label: string, ...parts: Uint8Array[]): Buffer {
  const h = createHmac('sha256', token).update(label);
  for (const p of parts) h.update(p);
  return h.digest();
}

export function peerKxProof(token: string, masterNonce: Uint8Array, clientNonce: Uint8Array, peerPub: Uint8Array): Buffer {
  return mac(token, 'tccl-kx-peer-v1', masterNonce, clientNonce, peerPub);
}

export function masterKxProof(token: string, clientNonce: Uint8Array, masterNonce: Uint8Array, peerPub: Uint8Array, masterPub: Uint8Array): Buffer {
  return mac(token, 'tccl-kx-master-v1', clientNonce, masterNonce, peerPub, masterPub);
}

/** The two direction keys of a control connection, from the shared secret and the transcript. */
export function controlKeys(token: string, shared: Uint8Array, clientNonce: Uint8Array, masterNonce: Uint8Array, peerPub: Uint8Array, masterPub: Uint8Array): { p2m: Buffer; m2p: Buffer } {
  const transcript = Buffer.concat([clientNonce, masterNonce, peerPub, masterPub]);
  const ikm = Buffer.concat([shared, mac(token, 'tccl-kx-psk-v1', transcript)]);
  const salt = createHash('sha256').update(transcript).digest();
  const key = (info: string) => Buffer.from(hkdfSync('sha256', ikm, salt, info, KEY_BYTES));
  return { p2m: key('tccl-ctl-p2m-v1'), m2p: key('tccl-ctl-m2p-v1') };
}

/** The peer's half of the exchange: its `kx` for a challenge, then the keys from the master's `kx`. */
export class ClientKeyExchange {
  private readonly pair = x25519Pair();
  private masterNonce?: Uint8Array;

  constructor(private readonly token: string, private readonly clientNonce: Uint8Array) {}

  offer(masterNonce: Uint8Array): { t: 'kx'; pub: Buffer; proof: Buffer } {
    this.masterNonce = masterNonce;
    return { t: 'kx', pub: this.pair.pub, proof: peerKxProof(this.token, masterNonce, this.clientNonce, this.pair.pub) };
  }

  /** Checks the master's proof (AuthError when it does not know the token) and derives the keys. */
  finish(m: { pub: Uint8Array; proof: Uint8Array }): SessionKeys {
    if (!this.masterNonce) throw new AuthError('Key exchange answered before it was offered');
    const expected = masterKxProof(this.token, this.clientNonce, this.masterNonce, this.pair.pub, m.pub);
    if (!proofMatches(expected, m.proof)) throw new AuthError('The master failed to prove it knows the run token');
    const shared = x25519(this.pair.priv, m.pub);
    const k = controlKeys(this.token, shared, this.clientNonce, this.masterNonce, this.pair.pub, m.pub);
    return { tx: k.p2m, rx: k.m2p };
  }
}

/**
 * The master's half: undefined when the peer's proof is wrong (checked before any public-key work); otherwise
 * the `kx` to answer with and the keys.
 */
export function acceptKeyExchange(token: string, clientNonce: Uint8Array, masterNonce: Uint8Array, m: { pub: Uint8Array; proof: Uint8Array }): { reply: { t: 'kx'; pub: Buffer; proof: Buffer }; keys: SessionKeys } | undefined {
  if (!proofMatches(peerKxProof(token, masterNonce, clientNonce, m.pub), m.proof)) return undefined;
  const pair = x25519Pair();
  const shared = x25519(pair.priv, m.pub);
  const k = controlKeys(token, shared, clientNonce, masterNonce, m.pub, pair.pub);
  return { reply: { t: 'kx', pub: pair.pub, proof: masterKxProof(token, clientNonce, masterNonce, m.pub, pair.pub) }, keys: { tx: k.m2p, rx: k.p2m } };
}

/**
 * Seals and opens frames of one connection. A sealed frame is `length | ciphertext | tag`, the length counting
 * ciphertext and tag and serving as additional data; the nonce is the frame's number in its direction (4 zero
 * bytes, then 64 bits big-endian), never sent, so a replayed, reordered, dropped or altered frame fails its tag.
 */
export class FrameSealer {
  private txCount = 0n;
  private rxCount = 0n;

  constructor(private readonly keys: SessionKeys) {}

  /** Seals a plain frame (`length | body`). */
  seal(frame: Uint8Array): Buffer {
    const body = frame.subarray(HEADER_BYTES);
    const out = Buffer.allocUnsafe(HEADER_BYTES + body.length + TAG_BYTES);
    out.writeUInt32BE(body.length + TAG_BYTES, 0);
    const cipher = createCipheriv('aes-256-gcm', this.keys.tx, nonceOf(this.txCount++, 'send'));
    cipher.setAAD(out.subarray(0, HEADER_BYTES));
    const n = cipher.update(body).copy(out, HEADER_BYTES);
    cipher.final();
    cipher.getAuthTag().copy(out, HEADER_BYTES + n);
    return out;
  }

  /** Opens a sealed body (ciphertext | tag) given its length header; IntegrityError when the tag fails. */
  open(header: Uint8Array, sealed: Uint8Array): Buffer {
    const number = this.rxCount++;
    if (sealed.length < TAG_BYTES) throw new IntegrityError(`Sealed control frame ${number} of ${sealed.length} bytes is shorter than its tag`);
    const decipher = createDecipheriv('aes-256-gcm', this.keys.rx, nonceOf(number, 'receive'));
    decipher.setAAD(header);
    decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
    const body = decipher.update(sealed.subarray(0, sealed.length - TAG_BYTES));
    try {
      decipher.final();
    } catch {
      throw new IntegrityError(`Control frame ${number} failed its integrity check (altered, replayed, reordered or dropped on the way)`);
    }
    return body;
  }
}

function nonceOf(counter: bigint, what: string): Buffer {
  if (counter >= MAX_SEALED_FRAMES) throw new IntegrityError(`Too many frames to ${what} under one key: the connection must be re-established`);
  const nonce = Buffer.alloc(12);
  nonce.writeBigUInt64BE(counter, 4);
  return nonce;
}
