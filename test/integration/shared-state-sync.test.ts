// communicator.syncSharedState end to end: a real master, real peer processes (test/fixtures/communicator-peer.ts),
// real sockets. Late joiners, drifted entries, strategies, revision violations and a source killed mid-transfer.
import t, { Test } from 'tap';
import { Master } from '../../lib/master/master';
import { Connection } from '../../lib/protocol';
import { PeerEvent, PeerProcess, startPeer, waitFor } from '../helpers/communicator';


async function setup(t: Test) {
  const master = new Master({ logLevel: (process.env.TCCL_TEST_MASTER_LOG as 'error') ?? 'error', heartbeatIntervalMs: 200, peerTimeoutMs: 1500, voteTimeoutMs: 20_000 });
  const port = await master.listen();
  const peers: PeerProcess[] = [];
  t.teardown(async () => {
    await Promise.all(peers.map((p) => p.stop()));
    await master.close();
  });
  const spawn = (label: string) => {
    const p = startPeer({ master: `127.0.0.1:${port}`, connections: 2, label });
    peers.push(p);
    return p;
  };
  /** Starts peers; the first forms the group, the others are voted in by the members so far. */
  const group = async (labels: string[]) => {
    const ps = [spawn(labels[0])];
    await ps[0].ready;
    ps.push(...labels.slice(1).map(spawn));
    await waitFor(() => master.groupsInfo()[0]?.pending.length === ps.length - 1, 20_000, 'pending peers');
    if (ps.length > 1) await ps[0].request('updateTopology');
    for (const p of ps) t.equal((await p.ready).ev, 'ready', `${p === ps[0] ? 'first' : 'voted-in'} peer ready`);
    return ps;
  };
  return { master, spawn, group, peers };
}

const entries = (seedOf: (key: string) => number, rng: number) => [
  { key: 'weights', length: 3 << 20, seed: seedOf('weights') }, // 12 MiB: split between sources
  { key: 'bias', length: 4096, seed: seedOf('bias') },
  { key: 'rng', length: 16, seed: rng, allowContentInequality: true },
];
const same = (k: string) => (k === 'weights' ? 11 : 22);

const sync = (ps: PeerProcess[], strategies: (string | undefined)[] = []) =>
  Promise.all(ps.map((p, i) => p.request('sync', { strategy: strategies[i] })));
const bumpAll = (ps: PeerProcess[]) => Promise.all(ps.map((p) => p.request('bump')));
const result = (r: PeerEvent) => r.result as { revision: number; role: string; changedKeys: string[]; bytesReceived: number; bytesSent: number; attempts: number };
const hashes = (r: PeerEvent) => r.hashes as Record<string, string>;

t.test('late joiner, a drifted entry, allowContentInequality, receiveOnly, revisions and a revision violation', async (t) => {
  const { master, spawn, group } = await setup(t);
  const [a, b, c] = await group(['a', 'b', 'c']);
  const init = await Promise.all([a, b, c].map((p, i) => p.request('init', { entries: entries(same, 100 + i) })));
  t.ok(init.every((r) => r.ok));

  // First sync at revision 1: everyone agrees, nothing moves.
  await bumpAll([a, b, c]);
  let rs = await sync([a, b, c]);
  t.ok(rs.every((r) => r.ok), 'first sync succeeds');
  t.same(rs.map((r) => r.revision), [1, 1, 1]);
  t.same(rs.map((r) => result(r).bytesReceived), [0, 0, 0], 'nothing to transfer');

  // c's bias drifts: only that entry is sent to c, and its rng (allowContentInequality) stays its own.
  const rngC = hashes(init[2]).rng;
  await c.request('alter', { key: 'bias', index: 7 });
  await bumpAll([a, b, c]);
  rs = await sync([a, b, c]);
  t.ok(rs.every((r) => r.ok), 'second sync succeeds');
  t.same(rs.map((r) => r.revision), [2, 2, 2], 'revision + 1');
  const rc = result(rs[2]);
  t.equal(rc.role, 'receiver');
  t.same(rc.changedKeys, ['bias'], 'only the drifted entry changed');
  t.equal(rc.bytesReceived, 4096 * 4, 'only the drifted entry was transferred');
  t.equal(hashes(rs[2]).bias, hashes(rs[0]).bias, 'bias corrected');
  t.equal(hashes(rs[2]).weights, hashes(rs[0]).weights);
  t.equal(hashes(rs[2]).rng, rngC, 'allowContentInequality entry untouched');
  t.not(hashes(rs[2]).rng, hashes(rs[0]).rng);
  t.equal(result(rs[0]).bytesSent + result(rs[1]).bytesSent, 4096 * 4, 'the sources sent exactly that');

  // A late joiner with a blank state, receiveOnly: it gets everything from a and b.
  const d = spawn('d');
  await waitFor(() => master.groupsInfo()[0]?.pending.length === 1, 20_000, 'd pending');
  const votes = Promise.all([a, b, c].map((p) => p.request('updateTopology')));
  t.equal((await d.ready).ev, 'ready');
  await votes;
  await d.request('init', { entries: entries(() => 999, 103) });
  await bumpAll([a, b, c]);
  rs = await sync([a, b, c, d], [undefined, undefined, undefined, 'receiveOnly']);
  t.ok(rs.every((r) => r.ok), 'third sync succeeds');
  t.same(rs.map((r) => r.revision), [3, 3, 3, 3], 'the joiner takes the elected revision');
  const rd = result(rs[3]);
  t.equal(rd.role, 'receiver');
  t.same(rd.changedKeys, ['bias', 'weights']);
  t.equal(rd.bytesReceived, (3 << 20) * 4 + 4096 * 4, 'the full state');
  t.equal(hashes(rs[3]).weights, hashes(rs[0]).weights, 'weights hash matches');
  t.equal(hashes(rs[3]).bias, hashes(rs[0]).bias, 'bias hash matches');
  t.ok(result(rs[0]).bytesSent > 0 && result(rs[1]).bytesSent > 0 && result(rs[2]).bytesSent > 0, 'split between the sources');

  // c forgets to bump: it fails naming the expected revision; the others advance.
  await bumpAll([a, b, d]);
  rs = await sync([a, b, c, d]);
  t.ok(rs[0].ok && rs[1].ok && rs[3].ok);
  t.equal(rs[2].ok, false);
  t.equal(rs[2].code, 'STATE_REVISION');
  t.match(rs[2].message, /expected revision 4 \(the group's last sync was at revision 3\), got 3/);
  t.ok(rs[2].intact, 'the failing peer keeps its state');
  t.same([rs[0], rs[1], rs[3]].map((r) => r.revision), [4, 4, 4]);

  // Next sync: c took no part in the last one, so it is exempt and receives the group's revision.
  await bumpAll([a, b, d]);
  rs = await sync([a, b, c, d]);
  t.ok(rs.every((r) => r.ok), 'c catches up');
  t.same(rs.map((r) => r.revision), [5, 5, 5, 5]);
  t.same(result(rs[2]).changedKeys, [], 'only its revision changed');
});

t.test('sendOnly wins, sendOnly conflict, receiveOnly without a source', async (t) => {
  const { master, group } = await setup(t);
  const [a, b, c] = await group(['a', 'b', 'c']);
  await a.request('init', { entries: entries(() => 5, 1) });
  await b.request('init', { entries: entries(() => 6, 2) });
  await c.request('init', { entries: entries(() => 6, 3) });
  await bumpAll([a, b, c]);
  // a declares it holds the right state: it wins over the popular one.
  let rs = await sync([a, b, c], ['sendOnly']);
  t.ok(rs.every((r) => r.ok));
  t.equal(result(rs[0]).role, 'source');
  t.equal(hashes(rs[1]).weights, hashes(rs[0]).weights, 'b took the sendOnly state');
  t.equal(hashes(rs[2]).weights, hashes(rs[0]).weights, 'c took the sendOnly state');

  // a and b both sendOnly with different states: both fail and are dropped; c goes on.
  await b.request('alter', { key: 'bias', index: 1 });
  await bumpAll([a, b, c]);
  rs = await sync([a, b, c], ['sendOnly', 'sendOnly', 'enforcePopular']);
  for (const r of rs.slice(0, 2)) {
    t.equal(r.ok, false);
    t.equal(r.code, 'STATE_SENDONLY_CONFLICT');
    t.match(r.message, /sendOnly peers disagree/);
    t.ok(r.intact);
  }
  t.ok(rs[2].ok, 'the enforcePopular peer still syncs');
  t.equal(rs[2].revision, 2);
  await waitFor(() => master.groupsInfo()[0]?.members.length === 1, 10_000, 'the conflicting peers dropped');

  // c alone, receiveOnly: nobody offers a state.
  await c.request('bump');
  const r = await c.request('sync', { strategy: 'receiveOnly' });
  t.equal(r.ok, false);
  t.equal(r.code, 'STATE_NO_SOURCE');
  t.match(r.message, /No peer offers its shared state: every peer of the group asked for receiveOnly/);
  t.ok(r.intact);
});

t.test('a source killed during the transfer: the receiver finishes from the other; with none left, a clear error', async (t) => {
  const { master, spawn, group } = await setup(t);
  const [a, b] = await group(['a', 'b']);
  const big = (seed: number) => [{ key: 'weights', length: 8 << 20, seed }]; // 32 MiB
  await Promise.all([a, b].map((p) => p.request('init', { entries: big(7) })));
  await bumpAll([a, b]);
  t.ok((await sync([a, b])).every((r) => r.ok));
  const c = spawn('c');
  await waitFor(() => master.groupsInfo()[0]?.pending.length === 1, 20_000, 'c pending');
  await Promise.all([a, b].map((p) => p.request('updateTopology')));
  await c.ready;
  await c.request('init', { entries: big(8) });
  const idOf = new Map<string, PeerProcess>();
  for (const p of [a, b, c]) idOf.set(String((await p.ready).id), p);

  // Freeze the first source the moment the master sends the decision (before it can send a byte), then kill it.
  const send = Connection.prototype.send;
  const frozen: PeerProcess[] = [];
  let freezeCount = 1;
  t.teardown(() => { Connection.prototype.send = send; });
  Connection.prototype.send = function (this: Connection, m) {
    if (m.t === 'stateDecision' && freezeCount > 0) {
      const d = m.decision as { sources: string[]; transfers: unknown[] };
      if (d.transfers.length > 0) {
        for (const id of d.sources.slice(0, freezeCount)) {
          const p = idOf.get(id)!;
          if (!frozen.includes(p)) {
            p.kill('SIGSTOP');
            frozen.push(p);
          }
        }
        freezeCount = 0;
      }
    }
    return send.call(this, m);
  };
  await bumpAll([a, b]);
  const pending = sync([a, b, c], [undefined, undefined, 'receiveOnly']);
  await waitFor(() => frozen.length === 1, 20_000, 'a source frozen');
  await new Promise((r) => setTimeout(r, 300));
  const victim = frozen[0];
  victim.kill('SIGKILL');
  const survivor = victim === a ? b : a;
  const rs = await pending;
  const [rSurvivor, rc] = [rs[[a, b].indexOf(survivor)], rs[2]];
  t.ok(rSurvivor.ok, 'the other source completes');
  t.ok(rc.ok, `the receiver completes (${rc.message ?? ''})`);
  t.equal(result(rc).attempts, 2, 'after one re-election');
  t.equal(hashes(rc).weights, hashes(rSurvivor).weights, 'the receiver holds the correct state');
  t.equal(rc.revision, 2);
  t.equal(rSurvivor.revision, 2);

  // Now a receiveOnly newcomer whose only sources die: it gets a clear error and keeps its own state.
  const d = spawn('d');
  await waitFor(() => master.groupsInfo()[0]?.pending.length === 1, 20_000, 'd pending');
  await Promise.all([survivor, c].map((p) => p.request('updateTopology')));
  const dReady = await d.ready;
  idOf.set(String(dReady.id), d);
  await d.request('init', { entries: big(9) });
  freezeCount = 2;
  await bumpAll([survivor, c]);
  const pending2 = sync([survivor, c, d], [undefined, undefined, 'receiveOnly']);
  await waitFor(() => frozen.length === 3, 20_000, 'both sources frozen');
  await new Promise((r) => setTimeout(r, 300));
  survivor.kill('SIGKILL');
  c.kill('SIGKILL');
  const rd = (await pending2)[2];
  t.equal(rd.ok, false);
  t.equal(rd.code, 'STATE_NO_SOURCE', rd.message as string);
  t.ok(rd.intact, "the receiver's state is untouched");
});
