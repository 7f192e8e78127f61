// The master against strangers and bad clients (wrong or missing token, garbage, oversized frames, another
// protocol version), two isolated peer groups, and peers on several loopback addresses. Peers here are
// in-process Communicators with real data-plane engines.
import t, { Test } from 'tap';
import * as net from 'node:net';
import { Master } from '../../lib/master/master';
import { Communicator } from '../../lib/peer/communicator';
import { AuthError, ProtocolError } from '../../lib/errors';
import { FrameDecoder, encodeFrame, makeNonce, PROTOCOL_VERSION } from '../../lib/protocol';

const TOKEN = 'correct horse battery staple';

async function startMaster(t: Test, opts = {}): Promise<{ master: Master; address: string }> {
  const master = new Master({ logLevel: 'silent', heartbeatIntervalMs: 200, peerTimeoutMs: 2000, ...opts });
  const port = await master.listen();
  t.teardown(() => master.close());
  return { master, address: `127.0.0.1:${port}` };
}

async function connect(t: Test, opts: Parameters<typeof Communicator.connect>[0]): Promise<Communicator> {
  const c = await Communicator.connect({ connections: 2, logLevel: 'silent', listenHost: '127.0.0.1', ...opts });
  t.teardown(() => c.close());
  return c;
}

/** Two accepted peers of a group, after their vote. */
async function pair(t: Test, address: string, extra = {}): Promise<[Communicator, Communicator]> {
  const a = await connect(t, { master: address, ...extra });
  const bp = connect(t, { master: address, ...extra });
  while (!a.arePeersPending()) await new Promise((r) => setTimeout(r, 10));
  await a.updateTopology();
  return [a, await bp];
}

async function reduceBoth(a: Communicator, b: Communicator, tag = 0): Promise<number[]> {
  const x = new Float64Array([1, 2, 3]);
  const y = new Float64Array([10, 20, 30]);
  const [ra, rb] = await Promise.all([a.allReduce(x, { tag }), b.allReduce(y, { tag })]);
  if (ra.worldSize !== 2 || rb.worldSize !== 2) throw new Error('unexpected world size');
  if (!x.every((v, i) => v === y[i])) throw new Error('peers disagree');
  return Array.from(x);
}

/** Opens a raw socket, sends `bytes`, and collects whatever comes back until the master closes it. */
function raw(address: string, bytes: Buffer[]): Promise<{ messages: Record<string, unknown>[]; closed: boolean }> {
  const [host, port] = address.split(':');
  return new Promise((resolve) => {
    const s = net.connect({ host, port: Number(port) });
    const dec = new FrameDecoder();
    const messages: Record<string, unknown>[] = [];
    const timer = setTimeout(() => { s.destroy(); resolve({ messages, closed: false }); }, 8000);
    s.on('connect', () => { for (const b of bytes) s.write(b); });
    s.on('data', (d) => { try { messages.push(...dec.push(d)); } catch { /* ignore */ } });
    s.on('error', () => undefined);
    s.on('close', () => { clearTimeout(timer); resolve({ messages, closed: true }); });
  });
}

const hello = (over: object = {}) => encodeFrame({ t: 'hello', proto: 'tccl', version: PROTOCOL_VERSION, nonce: makeNonce(), ...over });

t.test('strangers and bad clients are rejected and disturb nothing', async (t) => {
  const { master, address } = await startMaster(t, { token: TOKEN });
  const [a, b] = await pair(t, address, { token: TOKEN });
  t.same(await reduceBoth(a, b), [11, 22, 33], 'the group works before');
  const epoch = a.currentEpoch;

  await t.rejects(connect(t, { master: address, token: 'wrong token' }), AuthError, 'a wrong token fails with AuthError');
  await t.rejects(connect(t, { master: address, token: 'wrong token' }), { message: /wrong run token/ }, 'the error says the token was wrong');
  await t.rejects(connect(t, { master: address }), { name: 'AuthError', message: /requires a run token/ }, 'a missing token fails with AuthError');

  const garbage = await raw(address, [Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')]);
  t.ok(garbage.closed, 'garbage bytes: the master closes the connection');
  const junk = await raw(address, [Buffer.from([0, 0, 0, 5, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1])]);
  t.ok(junk.closed, 'an undecodable frame: closed');
  const huge = Buffer.alloc(8);
  huge.writeUInt32BE(64 << 20, 0);
  const oversized = await raw(address, [huge]);
  t.ok(oversized.closed, 'an oversized frame: closed');
  const wrongVersion = await raw(address, [hello({ version: PROTOCOL_VERSION + 1 })]);
  t.ok(wrongVersion.closed, 'a wrong protocol version: closed');
  t.match(wrongVersion.messages, [{ t: 'error', code: 'PROTOCOL', message: /version/ }], 'with an error naming the version');
  const unknownField = await raw(address, [encodeFrame({ t: 'hello', proto: 'tccl', version: PROTOCOL_VERSION, nonce: makeNonce(), evil: 1 })]);
  t.match(unknownField.messages, [{ t: 'error', code: 'PROTOCOL', message: /Unknown field "evil"/ }], 'an unknown field is named');
  const skipHandshake = await raw(address, [encodeFrame({ t: 'vote', id: 1 })]);
  t.match(skipHandshake.messages, [{ t: 'error', code: 'PROTOCOL' }], 'a message before the handshake is refused');
  const noProof = await raw(address, [hello(), encodeFrame({ t: 'register', peerGroup: 0, dataPort: 1 })]);
  t.match(noProof.messages, [{ t: 'challenge', auth: true }, { t: 'error', code: 'AUTH' }], 'registering without a proof is refused');

  t.equal(a.currentEpoch, epoch, 'the group was not re-formed');
  t.equal(a.groupWorldSize, 2);
  t.same(master.groupsInfo().map((g) => g.members.length), [2], 'no stranger became a member');
  t.same(await reduceBoth(a, b, 1), [11, 22, 33], 'the group works after');
});

t.test('a peer with a token refuses a master without one; a master rejects a peer of another protocol version', async (t) => {
  const { address } = await startMaster(t);
  await t.rejects(connect(t, { master: address, token: TOKEN }), AuthError);
  const r = await raw(address, [hello({ proto: 'http' })]);
  t.match(r.messages, [{ t: 'error', code: 'PROTOCOL', message: /Unknown protocol/ }]);
  t.ok(ProtocolError);
});

t.test('two peer groups are isolated', async (t) => {
  const { master, address } = await startMaster(t);
  const [a0, b0] = await pair(t, address, { peerGroup: 0 });
  const [a1, b1] = await pair(t, address, { peerGroup: 7 });
  t.equal(a0.worldSize, 4, 'worldSize counts every group');
  t.equal(a0.groupWorldSize, 2, 'groupWorldSize counts this group');
  t.equal(a1.peerGroups, 2);
  const g0 = reduceBoth(a0, b0, 5);
  const g1 = (async () => {
    const x = new Float64Array([100, 200, 300]);
    const y = new Float64Array([1000, 2000, 3000]);
    await Promise.all([a1.allReduce(x, { tag: 5 }), b1.allReduce(y, { tag: 5 })]);
    return Array.from(x);
  })();
  t.same(await g0, [11, 22, 33], 'group 0 sums its own inputs');
  t.same(await g1, [1100, 2200, 3300], 'group 7 sums its own inputs');
  await b1.close();
  // Group 7 re-forms; group 0 is untouched.
  while (a1.groupWorldSize !== 1) await new Promise((r) => setTimeout(r, 10));
  t.same(master.groupsInfo().find((g) => g.peerGroup === 0)?.members.length, 2);
  t.same(await reduceBoth(a0, b0, 6), [11, 22, 33], 'group 0 still works');
});

t.test('peers on different loopback addresses share one run', async (t) => {
  const { master, address } = await startMaster(t, { host: '0.0.0.0', insecure: true });
  const a = await connect(t, { master: address });
  const peers = [
    connect(t, { master: address, listenHost: '127.0.0.2', advertiseAddress: '127.0.0.2' }),
    connect(t, { master: address, listenHost: '0.0.0.0', advertiseAddress: '127.0.0.3' }),
    connect(t, { master: `127.0.0.4:${address.split(':')[1]}`, listenHost: '0.0.0.0' }),
  ];
  while (master.groupsInfo()[0].pending.length < 3) await new Promise((r) => setTimeout(r, 10));
  await a.updateTopology();
  const all = [a, ...(await Promise.all(peers))];
  t.equal(a.groupWorldSize, 4);
  const inputs = all.map((_, i) => new Int32Array([i + 1, 10 * (i + 1)]));
  const rs = await Promise.all(all.map((c, i) => c.allReduce(inputs[i])));
  t.ok(rs.every((r) => r.worldSize === 4));
  t.ok(inputs.every((x) => x[0] === 10 && x[1] === 100), 'every peer holds the sum');
});
