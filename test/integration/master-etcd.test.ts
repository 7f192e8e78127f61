// Automatic fail-over with etcd (issue 13): two `tccl master --etcd` processes campaign in a real etcd; only the
// leader serves; SIGKILL it and the standby takes over, the peers resume there and the run continues; the old
// leader started again stays a standby; a leader frozen past its lease stops serving and says so (exit 3).
// Skips (with the reason) where the `etcd` binary is not installed (Debian: etcd-server; .ci/run installs it).
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { PeerProcess, expectedFirst, startPeer, waitFor } from '../helpers/communicator';
import { freePorts, stopAll } from '../harness/process';
import { ClientKeyExchange, Connection, PROTOCOL_VERSION, makeNonce, validateMessage } from '../../lib/protocol';

const TOKEN = 'etcd-test-token';
const hasEtcd = spawnSync('etcd', ['--version']).status === 0;

/** What a master answers a registering peer: 'welcome', or the error code (NOT_LEADER from a standby). */
function answer(port: number): Promise<string> {
  return new Promise((resolve) => {
    const conn = new Connection(net.connect({ host: '127.0.0.1', port }));
    const nonce = makeNonce();
    const kx = new ClientKeyExchange(TOKEN, nonce);
    const timer = setTimeout(() => { conn.close(); resolve('no answer'); }, 5000);
    conn.socket.once('connect', () => conn.send({ t: 'hello', proto: 'tccl', version: PROTOCOL_VERSION, nonce }));
    conn.on('close', () => { clearTimeout(timer); resolve('closed'); });
    conn.on('message', (raw) => {
      const m = validateMessage(raw);
      if (m.t === 'challenge') return conn.send(kx.offer(m.nonce));
      if (m.t === 'kx') {
        conn.secure(kx.finish(m));
        return conn.send({ t: 'register', peerGroup: 0, dataPort: 1 });
      }
      clearTimeout(timer);
      resolve(m.t === 'error' ? m.code : m.t);
      conn.close();
    });
  });
}

t.test('etcd fail-over: the standby takes over; the old leader does not serve', { skip: hasEtcd ? false : 'etcd is not installed (Debian package etcd-server)' }, async (t) => {
  const [client, peer] = await freePorts(2);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tccl-etcd-'));
  const etcdProc = spawn('etcd', [
    '--name', 't', '--data-dir', path.join(dir, 'data'),
    '--listen-client-urls', `http://127.0.0.1:${client}`, '--advertise-client-urls', `http://127.0.0.1:${client}`,
    '--listen-peer-urls', `http://127.0.0.1:${peer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`,
    '--initial-cluster', `t=http://127.0.0.1:${peer}`,
  ], { stdio: 'ignore' });
  t.teardown(() => { etcdProc.kill('SIGKILL'); fs.rmSync(dir, { recursive: true, force: true }); });
  await waitFor(async () => (await fetch(`http://127.0.0.1:${client}/health`).then((r) => r.ok, () => false)), 20_000, 'etcd');
  const [pa, pb] = await freePorts(2);
  const startMaster = (port: number) => new PeerProcess('lib/cli.ts', {
    argv: ['master', '--host', '127.0.0.1', '--port', String(port), '--etcd', `http://127.0.0.1:${client}`, '--etcd-ttl', '2', '--heartbeat-ms', '100', '--peer-timeout-ms', '1000'],
    env: { TCCL_TOKEN: TOKEN, TCCL_LOG_LEVEL: 'info' },
  });
  let a = startMaster(pa);
  await waitFor(() => a.stderr.includes('elected leader'), 20_000, 'master A elected');
  const b = startMaster(pb);
  await waitFor(() => b.stderr.includes('campaigning'), 20_000, 'master B campaigning');
  t.equal(await answer(pb), 'NOT_LEADER', 'the standby refuses peers');
  const list = `127.0.0.1:${pa},127.0.0.1:${pb}`;
  const peers: PeerProcess[] = [];
  t.teardown(() => stopAll([...peers, a, b]));
  for (let i = 0; i < 3; i++) {
    const p = startPeer({ master: list, token: TOKEN, value: i + 1 });
    if (i > 0) {
      await waitFor(async () => (await peers[0].request('state', {}, 5000)).pending === true, 20_000, 'pending');
      await Promise.all(peers.map((q) => q.request('updateTopology', {}, 20_000)));
    }
    peers.push(p);
    t.equal((await p.ready).ev, 'ready');
  }
  const ids = (await Promise.all(peers.map((p) => p.request('state', {}, 5000)))).map((s) => s.peer);
  const steps = 40;
  const loops = peers.map((p) => p.request('loop', { steps, n: 300, count: 2, length: 1024 }, 120_000));
  await peers[0].next((e) => e.ev === 'step' && (e.step as number) >= 3, 60_000);
  a.kill('SIGKILL');
  await a.exited;
  await waitFor(() => b.stderr.includes('elected leader'), 20_000, 'master B elected after A died');
  const results = await Promise.all(loops);
  for (const r of results) t.equal(r.ok, true, `a peer finished its loop at the new leader: ${r.message ?? ''}`);
  for (let s = 0; s < steps; s++) {
    const evs = peers.map((p) => p.events.find((e) => e.ev === 'step' && e.step === s)!);
    t.same(new Set(evs.map((e) => e.many)).size, 1, `step ${s}: the same results everywhere`);
    t.same(evs[0].first, expectedFirst([1, 2, 3], s), `step ${s}: the right sum`);
    t.same(evs.map((e) => e.id), ids, `step ${s}: ids kept`);
  }
  t.ok(b.stderr.includes("group rebuilt from its peers' reports"), 'the new leader rebuilt the group from the peers');
  // The old leader comes back: a standby, it does not serve.
  a = startMaster(pa);
  await waitFor(() => a.stderr.includes('campaigning'), 20_000, 'A campaigning again');
  t.equal(await answer(pa), 'NOT_LEADER', 'the restarted old leader does not serve');
  t.notOk(a.stderr.includes('elected leader'));
  // The leader frozen past its lease: A takes over; B, thawed, finds its lease lost, stops serving, exits 3.
  b.kill('SIGSTOP');
  await waitFor(() => a.stderr.includes('elected leader'), 30_000, 'A elected while B is frozen');
  b.kill('SIGCONT');
  const code = await b.exited;
  t.equal(code, 3, 'the former leader exits with 3');
  t.match(b.stderr, /lost its etcd lease .*stopped serving/, 'and says why');
  // A plain all-reduce may meet the re-form of the rebuild (a retryable error, on every peer alike): retry it.
  let after = await Promise.all(peers.map((p) => p.request('allReduce', { n: 50, step: 2 }, 30_000)));
  for (let i = 0; i < 5 && after.some((r) => r.code === 'PEER_LOST'); i++) {
    t.ok(after.every((r) => r.code === 'PEER_LOST'), 'all-or-nothing: every peer failed it alike');
    after = await Promise.all(peers.map((p) => p.request('allReduce', { n: 50, step: 2 }, 30_000)));
  }
  for (const r of after) t.same(r.first, expectedFirst([1, 2, 3], 2), `the run goes on at A: ${r.message ?? ''}`);
});
