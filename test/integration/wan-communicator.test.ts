// Master and peers on distinct addresses, reaching each other only through the WAN emulator (40 ms RTT):
// a join by vote, a peer killed mid-operation, correct results throughout. Proves that nothing depends on every
// process being on 127.0.0.1: each peer binds its data plane on a private address (127.0.35.x) that it never
// advertises, and advertises an emulated address (127.0.34.x) that only the emulator listens on.
import t from 'tap';
import { Master } from '../../lib/master/master';
import { WanEmulator } from '../harness/wan/emulator';
import { PeerProcess, expectedFirst, startPeer, waitFor } from '../helpers/communicator';

const linux = process.platform === 'linux';
const VALUES = [1, 2, 3];
const LINK = { delayMs: 20, connMbps: 100, aggMbps: 1000 }; // 40 ms RTT

const rounds = (p: PeerProcess, ws?: number) =>
  p.events.filter((e) => e.ev === 'round' && (ws === undefined || (e.worldSizes as number[]).every((w) => w === ws))).length;

t.test('peers on distinct emulated WAN addresses: join, kill, correct results', { skip: linux ? false : 'Linux only' }, async (t) => {
  const emu = await WanEmulator.start();
  const master = new Master({ host: '127.0.32.1', logLevel: 'warn', heartbeatIntervalMs: 200, peerTimeoutMs: 2000 });
  const peers: PeerProcess[] = [];
  t.teardown(async () => {
    await Promise.all(peers.map((p) => p.stop()));
    await master.close();
    await emu.close();
  });
  const masterPort = await master.listen();
  // Links: 1 = towards the master, 2 = from the master; 10 + v = towards peer v, 20 + v = from peer v.
  await emu.setLink(1, LINK);
  await emu.setLink(2, LINK);
  const m = await emu.addRoute({ listenHost: '127.0.33.1', targetHost: '127.0.32.1', targetPort: masterPort, fwdLink: 1, revLink: 2 });
  const masterAddress = `127.0.33.1:${m.port}`;

  async function spawnPeer(value: number): Promise<PeerProcess> {
    await emu.setLink(10 + value, LINK);
    await emu.setLink(20 + value, LINK);
    // The emulator picks the port on the emulated address; the peer binds the same port on its private address.
    const r = await emu.addRoute({
      listenHost: `127.0.34.${value}`,
      targetHost: `127.0.35.${value}`,
      targetPort: 0,
      fwdLink: 10 + value,
      revLink: 20 + value,
    });
    const p = startPeer({
      master: masterAddress,
      listenHost: `127.0.35.${value}`,
      dataPort: r.port,
      advertiseAddress: `127.0.34.${value}`,
      connections: 2,
      value,
      label: `wan${value}`,
    });
    peers.push(p);
    return p;
  }

  const a = await spawnPeer(1);
  t.equal((await a.ready).ev, 'ready', 'the first peer is accepted through the emulated master address');
  const b = await spawnPeer(2);
  await waitFor(() => master.groupsInfo()[0]?.pending.length === 1, 20_000, 'b pending');
  const t0 = performance.now();
  const [va] = await Promise.all([a.request('updateTopology'), b.ready]);
  const voteMs = performance.now() - t0;
  t.equal(va.accepted, 1, 'the vote accepted b');
  t.comment(`updateTopology accepting one peer at 40 ms RTT: ${voteMs.toFixed(0)} ms`);

  const [ra, rb] = await Promise.all([a.request('allReduce', { n: 4096, tag: 1 }), b.request('allReduce', { n: 4096, tag: 1 })]);
  t.ok(ra.ok && rb.ok, 'a two-peer all-reduce succeeds');
  t.same(ra.first, expectedFirst(VALUES.slice(0, 2), 0), 'the result is the sum of both inputs');
  t.equal(ra.hash, rb.hash, 'both peers hold the same bytes');

  // A third peer joins while the others loop (voting after every round); then it is killed mid-operation.
  const loop = { n: 65536, count: 2, rounds: 100000, vote: true };
  void a.request('many', loop);
  void b.request('many', loop);
  await waitFor(() => rounds(a) >= 2 && rounds(b) >= 2, 30_000, 'two-peer rounds');
  const c = await spawnPeer(3);
  const ready = await c.ready;
  t.equal(ready.groupWorldSize, 3, 'the newcomer is voted in by the running peers');
  void c.request('many', loop);
  await waitFor(() => rounds(a, 3) >= 2 && rounds(b, 3) >= 2 && rounds(c, 3) >= 2, 30_000, 'three-peer rounds');
  const before3 = rounds(a, 2);
  c.kill('SIGKILL');
  await waitFor(() => rounds(a, 2) >= before3 + 3 && rounds(b, 2) >= before3 + 3, 30_000, 'survivor rounds after the kill');

  // Every round any peer reported holds the exact sum of its participants, and all participants agree.
  const hashes = new Map<number, string>();
  for (const p of [a, b, c]) {
    for (const e of p.events.filter((x) => x.ev === 'round')) {
      const sizes = e.worldSizes as number[];
      (e.firsts as number[][]).forEach((first, i) => {
        const ws = sizes[i];
        t.same(first, expectedFirst(VALUES.slice(0, ws), 0), `round result is the sum of ${ws} inputs`);
        const h = (e.hashes as string[])[i];
        if (!hashes.has(ws)) hashes.set(ws, h);
        t.equal(h, hashes.get(ws), `same bytes on every peer at world size ${ws}`);
      });
    }
  }
  t.notOk([a, b].some((p) => p.events.some((e) => e.ev === 'reply' && e.ok === false)), 'no survivor saw a failure');
  t.equal(master.groupsInfo()[0]?.members.length, 2, 'the master dropped the killed peer');

  // The traffic went through the emulator: control to the master and data to each peer's emulated address.
  const s = await emu.stats();
  t.ok(s.links['1'].bytes > 0 && s.links['2'].bytes > 0, 'control traffic crossed the emulated master link');
  for (const v of [1, 2, 3]) t.ok(s.links[String(10 + v)].bytes > 65536 * 4, `data reached peer ${v} through its emulated address`);
});
