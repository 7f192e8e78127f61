// What the encryption of issue 22 costs, on one core, through the calls TCCL makes (lib/protocol/secure.ts):
// the control connection's key exchange (the master's side: the HMAC check a stranger gets, and the whole accept),
// sealing + opening a heartbeat-sized control frame, and AES-256-GCM (and ChaCha20-Poly1305) throughput on 1 MiB
// frames: the limit per core that an encrypted data plane would have (CPU seconds per GB). One JSON line.
//   node --import tsx bench/security/crypto.ts [--mib 256]
import { createCipheriv, getCiphers, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { ClientKeyExchange, FrameSealer, acceptKeyExchange, encodeFrame, makeNonce } from '../../lib/protocol';

const { values } = parseArgs({ options: { mib: { type: 'string' } } });
const MIB = Number(values.mib ?? 256);

/** Median of `rounds` timings of `n` calls of `f`, in microseconds per call (CPU time of this thread). */
function usPerCall(n: number, f: () => void, rounds = 5): number {
  const out: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = process.cpuUsage();
    for (let i = 0; i < n; i++) f();
    const d = process.cpuUsage(t0);
    out.push((d.user + d.system) / n);
  }
  return out.sort((a, b) => a - b)[Math.floor(rounds / 2)];
}

function cpuSecondsPerGB(cipher: 'aes-256-gcm' | 'chacha20-poly1305'): number {
  const key = randomBytes(32);
  const frame = randomBytes(1 << 20);
  const out = Buffer.allocUnsafe(frame.length);
  const nonce = Buffer.alloc(12);
  const t0 = process.cpuUsage();
  for (let i = 0; i < MIB; i++) {
    nonce.writeUInt32BE(i, 8);
    const c = cipher === 'aes-256-gcm' ? createCipheriv(cipher, key, nonce) : createCipheriv(cipher, key, nonce, { authTagLength: 16 });
    c.update(frame).copy(out);
    c.final();
    c.getAuthTag();
  }
  const d = process.cpuUsage(t0);
  return (d.user + d.system) / 1e6 / ((MIB * (1 << 20)) / 1e9);
}

const cn = makeNonce();
const mn = makeNonce();
const offer = new ClientKeyExchange('token', cn).offer(mn);
const forged = { ...offer, proof: randomBytes(32) };
const refuseUs = usPerCall(2000, () => acceptKeyExchange('token', cn, mn, forged));
const acceptUs = usPerCall(200, () => acceptKeyExchange('token', cn, mn, offer));
const peerUs = usPerCall(200, () => {
  const c = new ClientKeyExchange('token', cn);
  const o = c.offer(mn);
  c.finish(acceptKeyExchange('token', cn, mn, o)!.reply);
});
const keys = { tx: randomBytes(32), rx: randomBytes(32) };
const tx = new FrameSealer(keys);
const rx = new FrameSealer({ tx: keys.rx, rx: keys.tx });
const hb = encodeFrame({ t: 'hb', busy: 1200 });
const sealOpenUs = usPerCall(20000, () => {
  const s = tx.seal(hb);
  rx.open(s.subarray(0, 4), s.subarray(4));
});
const aes = cpuSecondsPerGB('aes-256-gcm');
const chacha = getCiphers().includes('chacha20-poly1305') ? cpuSecondsPerGB('chacha20-poly1305') : null;
console.log(JSON.stringify({
  bench: 'crypto', node: process.version, openssl: process.versions.openssl, mib: MIB,
  control: {
    refuseWrongProofUs: +refuseUs.toFixed(1), acceptKeyExchangeUs: +acceptUs.toFixed(1), peerSideKeyExchangeUs: +peerUs.toFixed(1),
    sealAndOpenHeartbeatUs: +sealOpenUs.toFixed(2),
  },
  aead1MiB: {
    aes256gcm: { cpuSecondsPerGB: +aes.toFixed(3), gbPerSecondPerCore: +(1 / aes).toFixed(2) },
    chacha20poly1305: chacha === null ? null : { cpuSecondsPerGB: +chacha.toFixed(3), gbPerSecondPerCore: +(1 / chacha).toFixed(2) },
  },
}));
