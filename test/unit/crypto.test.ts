// The control plane's cryptography (lib/protocol/secure.ts): the published known-answer vectors of the three
// primitives through the calls we make, then the exchange and the sealed frames, tampered with in every way.
import t from 'tap';
import { createCipheriv, createDecipheriv, createPrivateKey, createPublicKey, hkdfSync } from 'node:crypto';
import * as net from 'node:net';
import {
  ClientKeyExchange, Connection, FrameDecoder, FrameSealer, acceptKeyExchange, encodeFrame, makeNonce, rawPublic, x25519,
} from '../../lib/protocol';
import { AuthError, IntegrityError, errorFromCode } from '../../lib/errors';
import { linkSecurity, processIdentity } from '../../lib/peer/identity';

const hex = (s: string) => Buffer.from(s, 'hex');

// McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 13, 14 and 16 (AES-256).
const GCM = [
  { name: 'case 13', k: '00'.repeat(32), iv: '00'.repeat(12), a: '', p: '', c: '', tag: '530f8afbc74536b9a963b4f1c4cb738b' },
  { name: 'case 14', k: '00'.repeat(32), iv: '00'.repeat(12), a: '', p: '00'.repeat(16), c: 'cea7403d4d606b6e074ec5d3baf39d18', tag: 'd0d1c8a799996bf0265b98b5d48ab919' },
  {
    name: 'case 16',
    k: 'feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308',
    iv: 'cafebabefacedbaddecaf888',
    a: 'feedfacedeadbeeffeedfacedeadbeefabaddad2',
    p: 'd9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39',
    c: '522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662',
    tag: '76fc6ece0f4e1768cddf8853bb2d551b',
  },
];

t.test('AES-256-GCM known answers (McGrew-Viega)', async (t) => {
  for (const v of GCM) {
    const enc = createCipheriv('aes-256-gcm', hex(v.k), hex(v.iv));
    enc.setAAD(hex(v.a));
    const c = Buffer.concat([enc.update(hex(v.p)), enc.final()]);
    t.equal(c.toString('hex'), v.c, `${v.name}: ciphertext`);
    t.equal(enc.getAuthTag().toString('hex'), v.tag, `${v.name}: tag`);
    const dec = createDecipheriv('aes-256-gcm', hex(v.k), hex(v.iv));
    dec.setAAD(hex(v.a));
    dec.setAuthTag(hex(v.tag));
    t.equal(Buffer.concat([dec.update(hex(v.c)), dec.final()]).toString('hex'), v.p, `${v.name}: opens`);
  }
});

t.test('X25519 known answers (RFC 7748 section 6.1) through our x25519()', async (t) => {
  const priv = (d: string) => createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: hex(d).toString('base64url'), x: '' }, format: 'jwk' });
  const alice = priv('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
  const bob = priv('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb');
  const alicePub = rawPublic(createPublicKey(alice));
  const bobPub = rawPublic(createPublicKey(bob));
  t.equal(alicePub.toString('hex'), '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
  t.equal(bobPub.toString('hex'), 'de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
  const shared = '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742';
  t.equal(x25519(alice, bobPub).toString('hex'), shared);
  t.equal(x25519(bob, alicePub).toString('hex'), shared);
  t.throws(() => x25519(alice, Buffer.alloc(32)), AuthError, 'a low-order point (all zero) gives no shared secret');
  t.throws(() => x25519(alice, Buffer.alloc(31)), AuthError, 'a short key is refused');
});

t.test('HKDF-SHA256 known answers (RFC 5869 test cases 1 and 3)', async (t) => {
  const okm = (ikm: string, salt: string, info: string) => Buffer.from(hkdfSync('sha256', hex(ikm), hex(salt), hex(info), 42)).toString('hex');
  t.equal(okm('0b'.repeat(22), '000102030405060708090a0b0c', 'f0f1f2f3f4f5f6f7f8f9'),
    '3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865');
  t.equal(okm('0b'.repeat(22), '', ''),
    '8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8');
});

function exchange(peerToken: string, masterToken: string) {
  const cn = makeNonce();
  const mn = makeNonce();
  const client = new ClientKeyExchange(peerToken, cn);
  const offer = client.offer(mn);
  return { client, offer, accepted: acceptKeyExchange(masterToken, cn, mn, offer), cn, mn };
}

t.test('the key exchange: both sides agree; a wrong token or a swapped key cannot complete it', async (t) => {
  const ok = exchange('tok', 'tok');
  t.ok(ok.accepted, 'the master accepts the right token');
  const keys = ok.client.finish(ok.accepted!.reply);
  t.same(keys.tx, ok.accepted!.keys.rx, 'peer->master key agrees');
  t.same(keys.rx, ok.accepted!.keys.tx, 'master->peer key agrees');
  t.notSame(keys.tx, keys.rx, 'one key per direction');
  t.notSame(exchange('tok', 'tok').accepted!.keys.tx, ok.accepted!.keys.tx, 'every exchange gives new keys');

  t.equal(exchange('wrong', 'tok').accepted, undefined, 'the master refuses a peer with a wrong token');
  const fake = exchange('tok', 'wrong');
  t.equal(fake.accepted, undefined);
  const impostor = acceptKeyExchange('wrong', fake.cn, fake.mn, { ...fake.offer, proof: fake.offer.proof });
  t.equal(impostor, undefined, 'a master without the token cannot even accept');
  // A man in the middle without the token: it swaps the peer's key for its own, keeping the proof.
  const mitm = exchange('tok', 'tok');
  const swapped = acceptKeyExchange('tok', mitm.cn, mitm.mn, { pub: rawPublic(createPublicKey(createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: Buffer.alloc(32, 9).toString('base64url'), x: '' }, format: 'jwk' }))), proof: mitm.offer.proof });
  t.equal(swapped, undefined, 'a swapped peer key fails the peer proof');
  // ... or answers the peer itself with a made-up proof.
  t.throws(() => mitm.client.finish({ pub: mitm.accepted!.reply.pub, proof: Buffer.alloc(32) }), AuthError, 'a master reply without the token fails');
});

t.test('sealed frames: round trip; altered, replayed, reordered, dropped or truncated frames fail their tag', async (t) => {
  const { client, accepted } = exchange('tok', 'tok');
  const keys = client.finish(accepted!.reply);
  const frames = [{ t: 'vote', id: 1 }, { t: 'vote', id: 2 }, { t: 'vote', id: 3 }].map((m) => encodeFrame(m));
  const fresh = () => {
    const d = new FrameDecoder();
    const s = new FrameSealer(accepted!.keys);
    d.sealOverhead = 16;
    d.opener = (h, b) => s.open(h, b);
    return d;
  };
  const tx = new FrameSealer(keys);
  const sealed = frames.map((f) => tx.seal(f));
  t.notOk(sealed[0].includes(frames[0].subarray(4)), 'the body is not on the wire');
  t.same(fresh().push(Buffer.concat(sealed)), [{ t: 'vote', id: 1 }, { t: 'vote', id: 2 }, { t: 'vote', id: 3 }], 'round trip');
  t.notSame(new FrameSealer(keys).seal(frames[0]), new FrameSealer(exchange('tok', 'tok').accepted!.keys).seal(frames[0]), 'another connection, other bytes');

  const flipped = Buffer.from(sealed[1]);
  flipped[6] ^= 1;
  const cases: [string, Buffer[]][] = [
    ['a flipped byte', [sealed[0], flipped]],
    ['a flipped tag byte', [sealed[0], Buffer.concat([sealed[1].subarray(0, -1), Buffer.from([sealed[1].at(-1)! ^ 0x80])])]],
    ['a replayed frame', [sealed[0], sealed[0]]],
    ['reordered frames', [sealed[1], sealed[0]]],
    ['a dropped frame', [sealed[0], sealed[2]]],
    ['a length rewritten (truncated body)', [Buffer.concat([Buffer.from([0, 0, 0, sealed[0].length - 5]), sealed[0].subarray(4, -1)])]],
    ['a plain frame injected', [sealed[0], frames[1]]],
  ];
  for (const [what, bytes] of cases) {
    t.throws(() => fresh().push(Buffer.concat(bytes)), IntegrityError, `${what} fails its tag`);
  }
  const e = errorFromCode('INTEGRITY', 'x');
  t.ok(e instanceof IntegrityError && (e as IntegrityError).retryable, 'INTEGRITY is a retryable error of the one table');
});

t.test('a sealed Connection over a real socket: messages pass; one altered byte closes it with IntegrityError', async (t) => {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const raw = net.connect({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port });
  const other = await accepted;
  const { client, accepted: a } = exchange('tok', 'tok');
  const conn = new Connection(raw);
  conn.secure(client.finish(a!.reply));
  const peerSealer = new FrameSealer(a!.keys);
  const got: unknown[] = [];
  conn.on('message', (m) => got.push(m));
  const closed = new Promise<Error | undefined>((r) => conn.on('close', r));
  other.write(peerSealer.seal(encodeFrame({ t: 'ready', epoch: 1 })));
  const bad = peerSealer.seal(encodeFrame({ t: 'ready', epoch: 2 }));
  bad[bad.length - 20] ^= 0xff;
  setTimeout(() => other.write(bad), 100);
  const reason = await closed;
  t.same(got, [{ t: 'ready', epoch: 1 }], 'the good message arrived, the altered one never did');
  t.type(reason, IntegrityError, 'closed with IntegrityError');
  other.destroy();
});

t.test('a sealed Connection whose frame length was altered upwards is not kept alive by the trickle behind it', async (t) => {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const raw = net.connect({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port });
  const other = await accepted;
  const { client, accepted: a } = exchange('tok', 'tok');
  const conn = new Connection(raw);
  conn.secure(client.finish(a!.reply));
  const sealer = new FrameSealer(a!.keys);
  const closed = new Promise<Error | undefined>((r) => conn.on('close', r));
  conn.startHeartbeat(50, 600);
  // A heartbeat whose length says 64 KiB: what follows (more heartbeats) is read as its body, never completing it.
  const first = sealer.seal(encodeFrame({ t: 'hb' }));
  first.writeUInt32BE(64 << 10, 0);
  other.write(first);
  const trickle = setInterval(() => other.write(sealer.seal(encodeFrame({ t: 'hb' }))), 50);
  const deadline = setTimeout(() => conn.close(new Error('still open after 20 s')), 20_000);
  const reason = await closed;
  clearInterval(trickle);
  clearTimeout(deadline);
  t.match(reason?.message, /no heartbeat/, 'closed by the heartbeat deadline');
  other.destroy();
});

t.test('identity keys: one per process; a ring must announce ours at our index', async (t) => {
  const id = processIdentity();
  t.equal(processIdentity(), id, 'made once per process');
  t.equal(id.publicKey.length, 32);
  t.equal(id.privateKey.length, 32);
  const derived = rawPublic(createPublicKey(createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: id.privateKey.toString('base64url'), x: '' }, format: 'jwk' })));
  t.same(derived, id.publicKey, 'the private half matches the public one');
  const other = Buffer.alloc(32, 1);
  t.same(linkSecurity(id, [other, id.publicKey], 2, 1).peerKeys.map((k) => Buffer.from(k)), [other, id.publicKey]);
  t.throws(() => linkSecurity(id, [other, other], 2, 1), /not the one it registered/);
  t.throws(() => linkSecurity(id, [id.publicKey], 2, 0), /1 identity keys for 2 members/);
});
