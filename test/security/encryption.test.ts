// The control plane's encryption with real peer processes (docs/security.md, "Encryption"): a capture of the wire
// holds none of what the peers said after the key exchange, and a proxy that alters one byte of a sealed frame
// (either way) costs the connection, not the member: it reconnects, resumes its session, and the run goes on.
import t, { Test } from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Master } from '../../lib/master/master';
import { encodeFrame } from '../../lib/protocol';
import { PeerProcess, contribution, expectedFirst, startPeer, waitFor } from '../helpers/communicator';

const TOKEN = `tok-${randomBytes(12).toString('hex')}`;

async function startMaster(t: Test, extra: { httpPort?: number } = {}) {
  const master = new Master({ host: '127.0.0.1', port: 0, token: TOKEN, logLevel: 'silent', heartbeatIntervalMs: 200, peerTimeoutMs: 4000, ...extra });
  await master.listen();
  const peers: PeerProcess[] = [];
  t.teardown(async () => {
    await Promise.all(peers.map((p) => p.stop()));
    await master.close();
  });
  return { master, peers };
}

/** Two peers in one group (the second voted in by the first), each dialling the master at its own address. */
async function twoPeers(master: Master, peers: PeerProcess[], addresses: [string, string], label = 'p') {
  const a = startPeer({ master: addresses[0], token: TOKEN, value: 1, connections: 1, label: `${label}-a`, listenHost: '127.0.0.1' });
  peers.push(a);
  if ((await a.ready).ev !== 'ready') throw new Error(`a did not join: ${JSON.stringify(await a.ready)}`);
  const b = startPeer({ master: addresses[1], token: TOKEN, value: 2, connections: 1, label: `${label}-b`, listenHost: '127.0.0.1' });
  peers.push(b);
  await waitFor(() => master.groupsInfo()[0]?.pending.length === 1, 30_000, 'b pending');
  await Promise.all([a.request('updateTopology', {}, 60_000), b.ready]);
  return [a, b] as const;
}

async function reduceBoth(a: PeerProcess, b: PeerProcess, step: number, n = 4096) {
  const rs = await Promise.all([a, b].map((p) => p.request('allReduce', { n, step, timeoutMs: 60_000 }, 90_000)));
  return rs;
}

const hasTcpdump = spawnSync('tcpdump', ['--version']).status === 0;

t.test('a capture of the master port holds neither the token, nor the labels, nor the tensor pattern; the hello is there',
  { skip: hasTcpdump ? false : 'tcpdump is not installed (Debian package tcpdump; .ci/run installs it)' }, async (t) => {
    const { master, peers } = await startMaster(t);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tccl-cap-'));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'ctl.pcap');
    const dump = spawn('tcpdump', ['-i', 'lo', '-U', '-n', '-s', '0', '-w', file, `tcp port ${master.port}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    const listening = new Promise<boolean>((resolve) => {
      dump.stderr!.on('data', (d: Buffer) => { err += d.toString(); if (/listening on/.test(err)) resolve(true); });
      dump.once('exit', () => resolve(false));
    });
    const started = await Promise.race([listening, new Promise<boolean>((r) => setTimeout(() => r(false), 15_000))]);
    if (!started) {
      dump.kill('SIGKILL');
      t.plan(0, `tcpdump could not capture on lo (it needs CAP_NET_RAW): ${err.trim().slice(0, 300)}`);
      return;
    }
    t.teardown(() => { if (dump.exitCode === null) dump.kill('SIGKILL'); });

    const label = `LABEL${randomBytes(6).toString('hex')}`;
    const [a, b] = await twoPeers(master, peers, [master.address, master.address], label);
    const rs = await reduceBoth(a, b, 5);
    t.ok(rs.every((r) => r.ok), 'the all-reduce works encrypted');
    t.same(rs[0].first, expectedFirst([1, 2], 5), 'and is right');
    // A vote and heartbeats more, then the capture ends.
    await Promise.all([a, b].map((p) => p.request('updateTopology', {}, 60_000)));
    await new Promise((r) => setTimeout(r, 600));
    const exited = new Promise((r) => dump.once('exit', r));
    dump.kill('SIGINT');
    await exited;

    const cap = fs.readFileSync(file);
    t.ok(cap.length > 1000, `the capture holds the control traffic (${cap.length} bytes)`);
    t.ok(cap.includes(Buffer.from('tccl')), 'the plain hello (proto "tccl") is in it: the capture saw the handshake');
    t.notOk(cap.includes(Buffer.from(TOKEN)), 'the token is not');
    t.notOk(cap.includes(Buffer.from(label)), 'the labels (sent in the sealed register) are not');
    t.notOk(cap.includes(Buffer.from('updateTopology')) || cap.includes(Buffer.from('voteResult')), 'no message type after the handshake is readable');
    const pattern = Buffer.from(contribution(1, 5, 8).buffer);
    t.notOk(cap.includes(pattern), 'nor the tensor pattern');
  });

type Way = 'toPeer' | 'toMaster';
type Attack = 'flip' | 'replay' | 'inject';

/**
 * A TCP proxy in front of the master that attacks the next chunk of one direction once armed: `flip` alters its
 * last byte (a tag byte of a sealed frame), `replay` sends it twice, `inject` puts a forged plain `dropped` message
 * before it.
 */
async function tamperingProxy(t: Test, target: number) {
  const armed: Partial<Record<Way, Attack>> = {};
  const done: Record<Way, number> = { toPeer: 0, toMaster: 0 };
  let accepted = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    accepted += 1;
    const upstream = net.connect({ host: '127.0.0.1', port: target });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => { sockets.delete(s); client.destroy(); upstream.destroy(); });
    }
    const relay = (from: net.Socket, to: net.Socket, way: Way) => from.on('data', (chunk: Buffer) => {
      const attack = armed[way];
      if (!attack || chunk.length < 21) return void to.write(chunk);
      delete armed[way];
      done[way] += 1;
      if (attack === 'flip') {
        chunk = Buffer.from(chunk);
        chunk[chunk.length - 1] ^= 0x40;
      }
      if (attack === 'inject') to.write(encodeFrame({ t: 'dropped', reason: 'forged by the proxy' }));
      to.write(chunk);
      if (attack === 'replay') to.write(chunk);
    });
    relay(client, upstream, 'toMaster');
    relay(upstream, client, 'toPeer');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => { for (const s of sockets) s.destroy(); server.close(); });
  return { address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`, armed, done, accepted: () => accepted };
}

t.test('a sealed control frame altered, replayed, or a forged one injected, either way: the connection fails its tag, is re-established, and the run goes on', async (t) => {
  const { master, peers } = await startMaster(t);
  const proxy = await tamperingProxy(t, master.port);
  const [a, b] = await twoPeers(master, peers, [master.address, proxy.address]);
  const before = master.groupsInfo()[0];
  t.same((await reduceBoth(a, b, 1))[1].first, expectedFirst([1, 2], 1), 'the group works before');
  t.equal(proxy.accepted(), 1, 'b dialled the master once, through the proxy');

  const attacks: [Way, Attack][] = [['toPeer', 'flip'], ['toMaster', 'flip'], ['toMaster', 'replay'], ['toPeer', 'inject'], ['toMaster', 'inject']];
  for (const [i, [way, attack]] of attacks.entries()) {
    const n = i + 2;
    const count = proxy.done[way];
    proxy.armed[way] = attack; // the next heartbeat (every 200 ms) carries it
    await waitFor(() => proxy.done[way] === count + 1, 20_000, `${attack} ${way}`);
    await waitFor(() => proxy.accepted() === n, 30_000, `b reconnected after ${attack} ${way}`);
    const rs = await reduceBoth(a, b, n);
    t.ok(rs.every((r) => r.ok), `after ${attack} ${way}: the all-reduce works`);
    t.same(rs[1].first, expectedFirst([1, 2], n), 'and is right');
  }
  const after = master.groupsInfo()[0];
  t.same(after.members, before.members, 'nobody was dropped or replaced: b resumed its session every time');
  t.equal(master.counters.peersDropped ?? 0, 0, 'the master dropped nobody');
  t.ok(peers.every((p) => p.alive), 'both peers run (the forged "dropped" was never read)');
});

t.test('a peer with the wrong token cannot complete the key exchange; /status says which links are encrypted', async (t) => {
  const { master, peers } = await startMaster(t, { httpPort: 0 });
  const r = await fetch(`http://127.0.0.1:${master.httpPort}/status`, { headers: { authorization: `Bearer ${TOKEN}` } });
  t.match((await r.json()) as object, { master: { auth: true, encryption: { control: 'aes-256-gcm', data: 'off' } } }, '/status: control sealed, data plane not yet');
  const p = startPeer({ master: master.address, token: 'not-the-token', value: 1, connections: 1, listenHost: '127.0.0.1' });
  peers.push(p);
  const ready = await p.ready;
  t.equal(ready.ev, 'connectError');
  t.match(ready, { code: 'AUTH', message: /wrong run token/ }, 'refused with AUTH, before any public-key work by the master');
  t.same(master.groupsInfo(), [], 'nobody joined');
});
