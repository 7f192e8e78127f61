// Control-plane framing, validation, auth proofs and log lines, without sockets.
import t from 'tap';
import { ProtocolError } from '../../lib/errors';
import {
  FrameDecoder, decodeBody, encodeFrame, makeNonce, masterKxProof, peerKxProof, proofMatches, validateMessage, PROTOCOL_VERSION,
} from '../../lib/protocol';
import { Logger } from '../../lib/log';
import { parseHostPort } from '../../lib/validate';

t.test('frames round-trip, also when split across chunks or batched', async (t) => {
  const msgs = [
    { t: 'hello', proto: 'tccl', version: PROTOCOL_VERSION, nonce: makeNonce() },
    { t: 'ring', epoch: 3, index: 1, peers: [{ id: 'p1@127.0.0.1:1', host: '127.0.0.1', port: 1 }], ticket: Buffer.alloc(16, 7), reason: 'x' },
    { t: 'hb' },
  ];
  const bytes = Buffer.concat(msgs.map((m) => encodeFrame(m)));
  for (const step of [1, 3, 7, bytes.length]) {
    const dec = new FrameDecoder();
    const out: Record<string, unknown>[] = [];
    for (let i = 0; i < bytes.length; i += step) out.push(...dec.push(bytes.subarray(i, i + step)));
    t.equal(out.length, 3, `chunks of ${step} bytes`);
    t.same(out.map((m) => m.t), ['hello', 'ring', 'hb']);
    t.ok(Buffer.from(out[1].ticket as Uint8Array).equals(Buffer.alloc(16, 7)), 'bytes survive');
    for (const m of out) validateMessage(m);
  }
});

t.test('the decoder refuses oversized, empty and undecodable frames', async (t) => {
  const dec = new FrameDecoder(1024);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(4096, 0);
  t.throws(() => dec.push(head), { name: 'ProtocolError', message: /4096 bytes exceeds the maximum frame size of 1024/ });
  t.throws(() => new FrameDecoder().push(Buffer.alloc(4)), /Empty control frame/);
  t.throws(() => new FrameDecoder().push(Buffer.from([0, 0, 0, 2, 0xc1, 0xc1])), ProtocolError);
  t.throws(() => decodeBody(Buffer.from([0x01])), /not a msgpack map/);
  t.throws(() => decodeBody(Buffer.from([0x80, 0x80])), /2 msgpack values/);
  t.throws(() => encodeFrame({ t: 'error', code: 'X', message: 'y'.repeat(5000) }, 1024), /exceeds the maximum frame size/);
});

t.test('validation names what is wrong', async (t) => {
  const ok = { t: 'vote', id: 4 };
  t.same(validateMessage(ok), ok);
  t.throws(() => validateMessage({ id: 1 }), /no string type field/);
  t.throws(() => validateMessage({ t: 'launchMissiles' }), /Unknown control message type "launchMissiles"/);
  t.throws(() => validateMessage({ t: 'vote' }), /Missing field "id" in a "vote" message/);
  t.throws(() => validateMessage({ t: 'vote', id: -1 }), /"id" of a "vote" message to be an integer/);
  t.throws(() => validateMessage({ t: 'vote', id: 1.5 }), ProtocolError);
  t.throws(() => validateMessage({ t: 'vote', id: 1, x: 2 }), /Unknown field "x"/);
  t.throws(() => validateMessage({ t: 'ack', epoch: '3' }), /integer/);
  t.throws(() => validateMessage({ t: 'register', peerGroup: 0, dataPort: 0 }), /dataPort/);
  t.throws(() => validateMessage({ t: 'hello', proto: 'tccl', version: 1, nonce: Buffer.alloc(8) }), /"nonce" of a "hello" message to be 32 bytes/);
  t.throws(() => validateMessage({ t: 'ring', epoch: 1, index: 0, peers: [{ id: 'a', host: 'h' }], ticket: Buffer.alloc(16), reason: '' }), /exactly \{id, host, port\}/);
  t.throws(() => validateMessage(ok, ['hello']), /Unexpected "vote" message here; expected "hello"/);
});

t.test('token proofs: HMAC both ways, compared in constant time', async (t) => {
  const mn = makeNonce();
  const cn = makeNonce();
  const key = Buffer.alloc(32, 7);
  const p = peerKxProof('tok', mn, cn, key);
  t.equal(p.length, 32);
  t.ok(proofMatches(p, peerKxProof('tok', mn, cn, key)));
  t.notOk(proofMatches(p, peerKxProof('other', mn, cn, key)), 'another token gives another proof');
  t.notOk(proofMatches(p, peerKxProof('tok', makeNonce(), cn, key)), 'another nonce gives another proof');
  t.notOk(proofMatches(p, peerKxProof('tok', mn, cn, Buffer.alloc(32, 8))), 'another ephemeral key gives another proof');
  t.notOk(proofMatches(p, undefined));
  t.notOk(proofMatches(p, p.subarray(0, 16)));
  t.notOk(proofMatches(p, masterKxProof('tok', cn, mn, key, key)), 'the master proof differs from the peer proof');
});

t.test('log lines are one line per event with key=value fields', async (t) => {
  const lines: string[] = [];
  const log = new Logger('master', 'info', 'info', (l) => lines.push(l));
  log.info('peer dropped', { peer: 'p3', reason: 'no heartbeat for 3000 ms', epoch: 7 });
  log.debug('hidden');
  t.equal(lines.length, 1);
  t.match(lines[0], /^\S+Z INFO  master: peer dropped peer=p3 reason="no heartbeat for 3000 ms" epoch=7$/);
  t.throws(() => new Logger('x', 'loud'), /one of silent, error, warn, info, debug/);
});

t.test('master addresses parse or fail clearly', async (t) => {
  t.same(parseHostPort('127.0.0.1:48148'), { host: '127.0.0.1', port: 48148 });
  t.same(parseHostPort('[::1]:9'), { host: '::1', port: 9 });
  t.throws(() => parseHostPort('localhost'), /"host:port"/);
  t.throws(() => parseHostPort('h:0'), /"host:port"/);
});
