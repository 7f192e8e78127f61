// The Communicator against a real master with real peer processes and the native data plane: joining while
// others run, a peer killed mid-operation, a frozen peer, and the default communicator.
import t, { Test } from 'tap';
import { Master } from '../../lib/master/master';
import { PeerEvent, PeerProcess, expectedFirst, startPeer, waitFor } from '../helpers/communicator';

const VALUES = [1, 2, 3];

/** Checks every round a peer reported: the sum over the first worldSize peers, and one hash per world size. */
function checkRounds(t: Test, peers: PeerProcess[], hashes: Map<number, string>): void {
  for (const p of peers) {
    for (const e of p.events.filter((x) => x.ev === 'round')) {
      const sizes = e.worldSizes as number[];
      (e.firsts as number[][]).forEach((first, i) => {
        const ws = sizes[i];
        t.same(first, expectedFirst(VALUES.slice(0, ws), 0), `result is the sum of the ${ws} participants' inputs`);
        const h = (e.hashes as string[])[i];
        if (!hashes.has(ws)) hashes.set(ws, h);
        t.equal(h, hashes.get(ws), `every peer holds the same bytes at world size ${ws}`);
      });
    }
  }
}

const rounds = (p: PeerProcess, ws?: number) =>
  p.events.filter((e) => e.ev === 'round' && (ws === undefined || (e.worldSizes as number[]).every((w) => w === ws))).length;

async function startMaster(t: Test, opts = {}): Promise<{ master: Master; address: string; peers: PeerProcess[] }> {
  const master = new Master({ logLevel: 'error', heartbeatIntervalMs: 200, peerTimeoutMs: 1500, ...opts });
  const port = await master.listen();
  const peers: PeerProcess[] = [];
  t.teardown(async () => {
    await Promise.all(peers.map((p) => p.stop()));
    await master.close();
  });
  return { master, address: `127.0.0.1:${port}`, peers };
}

function spawnPeer(peers: PeerProcess[], address: string, value: number, extra = {}): PeerProcess {
  const p = startPeer({ master: address, value, connections: 2, label: `v${value}`, ...extra });
  peers.push(p);
  return p;
}

t.test('a peer joins while the others run, after they vote it in', async (t) => {
  const { master, address, peers } = await startMaster(t);
  const a = spawnPeer(peers, address, 1);
  t.equal((await a.ready).ev, 'ready');
  const b = spawnPeer(peers, address, 2);
  await waitFor(() => master.groupsInfo()[0]?.pending.length === 1, 20_000, 'b pending');
  const [va] = await Promise.all([a.request('updateTopology'), b.ready]);
  t.equal(va.accepted, 1, 'the vote accepted one peer');
  const loop = { n: 65536, count: 3, rounds: 100000, vote: true };
  void a.request('many', loop);
  void b.request('many', loop);
  await waitFor(() => rounds(a) >= 3 && rounds(b) >= 3, 30_000, 'two-peer rounds');
  const c = spawnPeer(peers, address, 3);
  const ready = await c.ready;
  t.equal(ready.ev, 'ready');
  t.equal(ready.groupWorldSize, 3, 'the newcomer is accepted by the running peers');
  void c.request('many', loop);
  await waitFor(() => rounds(a, 3) >= 3 && rounds(b, 3) >= 3 && rounds(c, 3) >= 3, 30_000, 'three-peer rounds');
  checkRounds(t, [a, b, c], new Map());
  t.notOk([a, b, c].some((p) => p.events.some((e) => e.ev === 'reply' && e.ok === false)), 'no operation failed');
});

/** Three peers of one group: the first forms it, one vote of it accepts the other two. */
async function threePeers(t: Test) {
  const { master, address, peers } = await startMaster(t);
  const a = spawnPeer(peers, address, 1);
  await a.ready;
  const b = spawnPeer(peers, address, 2);
  const c = spawnPeer(peers, address, 3);
  await waitFor(async () => (await a.request('state')).pending === true && master.groupsInfo()[0]?.pending.length === 2, 20_000, 'pending peers');
  t.equal((await a.request('updateTopology')).accepted, 2, 'one vote accepts both pending peers');
  const [, cReady] = await Promise.all([b.ready, c.ready]);
  return { master, a, b, c, cReady };
}

t.test('SIGKILL during operations: survivors retry at the smaller world with intact buffers', async (t) => {
  const { a, b, c } = await threePeers(t);
  const loop = { n: 262144, count: 4, maxInFlight: 2, rounds: 100000 };
  const replies = [a, b, c].map((p) => p.request('many', loop));
  void replies;
  await waitFor(() => rounds(a, 3) >= 3, 30_000, 'three-peer rounds');
  c.kill('SIGKILL');
  await waitFor(() => rounds(a, 2) >= 5 && rounds(b, 2) >= 5, 30_000, 'survivor rounds');
  checkRounds(t, [a, b], new Map());
  t.notOk([a, b].some((p) => p.events.some((e) => e.ev === 'reply' && e.ok === false)), 'no survivor saw a failure');

  // A single allReduce that fails leaves its input as it was.
  const single = await Promise.all([a.request('allReduce', { n: 16, tag: 999 }), b.request('allReduce', { n: 16, tag: 999 })]);
  t.ok(single.every((r: PeerEvent) => r.ok), 'plain allReduce works on the survivors');
});

t.test('a frozen peer is dropped, the others go on, and it gets a clear error when resumed', async (t) => {
  const { master, a, b, c, cReady } = await threePeers(t);
  const loop = { n: 65536, count: 2, rounds: 100000 };
  const cReply = c.request('many', loop);
  void a.request('many', loop);
  void b.request('many', loop);
  await waitFor(() => rounds(a, 3) >= 2, 30_000, 'three-peer rounds');
  c.kill('SIGSTOP');
  await waitFor(() => master.groupsInfo()[0]?.members.length === 2, 20_000, 'frozen peer dropped');
  t.notOk(master.groupsInfo()[0].members.includes(String(cReady.id)), 'the frozen peer is the one dropped');
  await waitFor(() => rounds(a, 2) >= 3 && rounds(b, 2) >= 3, 30_000, 'survivors go on');
  c.kill('SIGCONT');
  const r = await cReply;
  t.equal(r.ok, false, 'the resumed peer fails');
  t.equal(r.name, 'ClosedError');
  t.match(r.message, /dropped by the master: no heartbeat/, 'the error says it was dropped and why');
  const again = await c.request('state');
  t.ok(again.ok, 'the resumed process is still alive and answers');
  checkRounds(t, [a, b], new Map());
});
