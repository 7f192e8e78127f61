// Liveness that does not depend on the JavaScript thread, against a real master (default heartbeat 500 ms, peer
// timeout 3000 ms) and real peer processes: a peer busy on its JavaScript thread for 20 s stays a member (even
// through a re-form it cannot acknowledge meanwhile) and the others' all-reduce waits for it; a SIGSTOPped peer is
// still dropped; a JavaScript thread blocked past the master's jsHangTimeoutMs is dropped as hung.
import t, { Test } from 'tap';
import { Master, MasterOptions } from '../../lib/master/master';
import { PeerEvent, PeerProcess, expectedFirst, startPeer, waitFor } from '../helpers/communicator';

async function startMaster(t: Test, opts: MasterOptions = {}) {
  const master = new Master({ logLevel: 'error', ...opts });
  const port = await master.listen();
  const peers: PeerProcess[] = [];
  t.teardown(async () => {
    await Promise.all(peers.map((p) => p.stop()));
    await master.close();
  });
  const spawn = (value: number) => {
    const p = startPeer({ master: `127.0.0.1:${port}`, value, connections: 2, label: `v${value}` });
    peers.push(p);
    return p;
  };
  return { master, spawn };
}

/** `values.length` peers in one group: the first forms it, one vote of it accepts the others. */
async function group(t: Test, values: number[], opts: MasterOptions = {}) {
  const { master, spawn } = await startMaster(t, opts);
  const first = spawn(values[0]);
  const id = String((await first.ready).id);
  const rest = values.slice(1).map(spawn);
  await waitFor(() => master.groupsInfo()[0]?.pending.length === rest.length, 30_000, 'pending peers');
  t.equal((await first.request('updateTopology', {}, 30_000)).accepted, rest.length, 'one vote accepts the others');
  const ids = [id, ...(await Promise.all(rest.map(async (p) => String((await p.ready).id))))];
  return { master, peers: [first, ...rest], ids };
}

const busySaid = (master: Master, peer: string) => master.events().some((e) => e.what.startsWith('peer busy') && e.fields.peer === peer);

t.test('a peer whose JavaScript thread is busy for 20 s stays a member, through a re-form, and the others wait for it', async (t) => {
  const { master, peers: [a, b, c, d], ids } = await group(t, [1, 2, 3, 4]);
  const blocked = c.request('block', { ms: 20_000 });
  const blockedAt = Date.now();
  await waitFor(() => busySaid(master, ids[2]), 10_000, 'the master hears that c is busy');
  // A re-form while c cannot install the new ring: it must wait for c, not drop it for a missing ack.
  d.kill('SIGKILL');
  await waitFor(() => master.groupsInfo()[0]?.members.length === 3, 10_000, 'd dropped');
  const order: string[] = [];
  const note = (who: string) => (r: PeerEvent) => (order.push(who), r);
  const waiting = [a.request('allReduce', { n: 4096, tag: 7 }).then(note('a')), b.request('allReduce', { n: 4096, tag: 7 }).then(note('b'))];
  const blockReply = await blocked.then(note('c blocked'));
  t.ok(blockReply.ok, 'c was blocked');
  t.ok(Date.now() - blockedAt >= 19_000, 'c was busy for about 20 s');
  t.same(master.groupsInfo()[0].members.sort(), ids.slice(0, 3).sort(), 'c is still a member');
  t.same(master.events().filter((e) => e.what === 'peer dropped').map((e) => e.fields.peer), [ids[3]], 'only the killed peer was dropped');
  const rc = await c.request('allReduce', { n: 4096, tag: 7 }, 60_000);
  const [ra, rb] = await Promise.all(waiting);
  for (const [who, r] of [['a', ra], ['b', rb], ['c', rc]] as const) {
    t.ok(r.ok, `${who}'s all-reduce succeeds`);
    t.equal(r.worldSize, 3, `${who}'s all-reduce has the full world`);
    t.same(r.first, expectedFirst([1, 2, 3], 0), `${who} holds the sum of a, b and c`);
  }
  t.equal(ra.hash, rc.hash, 'a and c hold the same bytes');
  t.equal(rb.hash, rc.hash, 'b and c hold the same bytes');
  t.equal(order[0], 'c blocked', 'the others\' all-reduce completed after the busy peer was free again');
});

t.test('a SIGSTOPped peer is still dropped and the survivors re-form', async (t) => {
  const { master, peers: [a, b, c], ids } = await group(t, [1, 2, 3]);
  c.kill('SIGSTOP');
  const stoppedAt = performance.now();
  await waitFor(() => master.groupsInfo()[0]?.members.length === 2, 30_000, 'the frozen peer dropped');
  const ms = Math.round(performance.now() - stoppedAt);
  t.comment(`SIGSTOP to drop: ${ms} ms (peer timeout 3000 ms, heartbeat 500 ms; bench/liveness measures it)`);
  // The requirement is peer timeout + one heartbeat (3.5 s); measured 3.34-3.50 s in runs on a loaded 2-core
  // machine (npx tap --grep=SIGSTOP test/security/liveness.test.ts). 6 s leaves 2.5 s of slack for scheduling
  // and the 20 ms polling of waitFor, and still fails a regression to, say, a 10 s or 30 s detection.
  t.ok(ms < 6_000, `dropped within 6 s (${ms} ms; the goal is under 3.5 s)`);
  t.notOk(master.groupsInfo()[0].members.includes(ids[2]), 'the frozen peer is the one dropped');
  t.match(master.events().find((e) => e.what === 'peer dropped')?.fields.reason, /^no heartbeat/, 'dropped for its silence');
  const rs = await Promise.all([a, b].map((p) => p.request('allReduce', { n: 1024, tag: 1 }, 60_000)));
  t.ok(rs.every((r) => r.ok && r.worldSize === 2), 'the survivors all-reduce at the smaller world');
  c.kill('SIGCONT');
});

t.test('a JavaScript thread blocked past jsHangTimeoutMs is dropped as hung', async (t) => {
  const { master, peers: [a, b], ids } = await group(t, [1, 2], { jsHangTimeoutMs: 3000 });
  const blocked = b.request('block', { ms: 9000 });
  await waitFor(() => master.groupsInfo()[0]?.members.length === 1, 20_000, 'the hung peer dropped');
  const drop = master.events().find((e) => e.what === 'peer dropped');
  t.equal(drop?.fields.peer, ids[1], 'the hung peer is the one dropped');
  t.match(drop?.fields.reason, /^JavaScript thread blocked for \d+ ms \(jsHangTimeoutMs 3000\)/, 'dropped as hung, not for silence');
  t.ok((await blocked).ok);
  const after = await b.request('allReduce', { n: 16 }, 30_000);
  t.equal(after.ok, false, 'the hung peer, free again, fails');
  t.equal(after.name, 'ClosedError');
  t.match(after.message, /dropped by the master: JavaScript thread blocked/, 'and is told why');
  const ra = await a.request('allReduce', { n: 16 }, 30_000);
  t.ok(ra.ok && ra.worldSize === 1, 'the other peer goes on');
});
