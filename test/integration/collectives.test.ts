// broadcast, allGather and reduceScatter between real peer processes: every dtype against a reference, bit-identical
// results, clear mismatches, and a peer SIGKILLed mid-collective: survivors retry and the result follows them; a
// broadcast whose root died fails with ROOT_LOST.
import t, { Test } from 'tap';
import { Master } from '../../lib/master/master';
import { PeerProcess, startPeer, waitFor } from '../helpers/communicator';

async function group(t: Test, n: number): Promise<{ master: Master; peers: PeerProcess[] }> {
  const master = new Master({ logLevel: 'error', heartbeatIntervalMs: 200, peerTimeoutMs: 3000 });
  const port = await master.listen();
  const peers = Array.from({ length: n }, (_, i) =>
    startPeer({ master: `127.0.0.1:${port}`, connections: 2, listenHost: '127.0.0.1', worldSize: n, admission: 'auto', label: `w${i}` }));
  t.teardown(async () => {
    await Promise.all(peers.map((p) => p.stop()));
    await master.close();
  });
  for (const p of peers) t.equal((await p.ready).ev, 'ready');
  return { master, peers };
}

type R = Record<string, unknown> & { ok: boolean; data: (number | string)[]; participants: string[]; rank: number; peer: string };
const run = (peers: PeerProcess[], args: (p: number) => object) =>
  Promise.all(peers.map((q, p) => q.request('collective', args(p), 90_000))) as unknown as Promise<R[]>;

// Small integers: exact in every dtype (16-bit floats as their bit patterns: raw values, moved but never summed).
const DTYPES = ['float32', 'float64', 'int8', 'uint8', 'int16', 'uint16', 'int32', 'uint32', 'int64', 'uint64', 'float16', 'bfloat16'];
const value = (p: number, i: number) => ((p * 7 + i * 3) % 50) + 1;

t.test('three peers: every dtype against the reference, results follow ring order and are bit-identical', async (t) => {
  const { peers } = await group(t, 3);
  const n = 1000;
  for (const dtype of DTYPES) {
    const ins = peers.map((_, p) => Array.from({ length: n + p * (dtype === 'int8' ? 1 : 0) }, (_, i) => value(p, i)));
    // all-gather, equal sizes: concatenation in participants order.
    const eq = await run(peers, (p) => ({ kind: 'allGather', dtype, elements: ins[p].slice(0, n), tag: 1 }));
    const byId = new Map(eq.map((r, p) => [r.peer, ins[p].slice(0, n)]));
    const want = eq[0].participants.flatMap((id) => byId.get(id)!).map((x) => (dtype.endsWith('64') && dtype !== 'float64' ? String(x) : x));
    for (const r of eq) {
      t.equal(r.ok, true, `${dtype} allGather: ${String(r.message ?? 'ok')}`);
      t.same(r.data, want, `${dtype}: every part in participants order`);
      t.same(r.participants, eq[0].participants);
    }
    // broadcast from rank 1: everyone gets its bytes.
    const bc = await run(peers, (p) => ({ kind: 'broadcast', dtype, elements: ins[p].slice(0, n), root: 1, tag: 2 }));
    const rootId = eq[0].participants[1];
    const rootIn = byId.get(rootId)!.map((x) => (dtype.endsWith('64') && dtype !== 'float64' ? String(x) : x));
    for (const r of bc) {
      t.equal(r.ok, true, `${dtype} broadcast: ${String(r.message ?? 'ok')}`);
      t.same(r.data, rootIn, `${dtype}: the root's data`);
      t.equal(r.root, rootId);
    }
    if (dtype === 'float16' || dtype === 'bfloat16') continue; // summing raw bits is not a reference
    // reduce-scatter sum: each peer's chunk of the sum, split evenly in ring order.
    const rs = await run(peers, (p) => ({ kind: 'reduceScatter', dtype, elements: ins[p].slice(0, n), op: 'max', tag: 3 }));
    const max = Array.from({ length: n }, (_, i) => Math.max(...ins.map((x) => x[i])));
    const got: (number | string)[] = [];
    for (const r of [...rs].sort((a, b) => a.rank - b.rank)) {
      t.equal(r.ok, true, `${dtype} reduceScatter: ${String(r.message ?? 'ok')}`);
      t.equal(r.offset, Math.floor((n * r.rank) / 3));
      got.push(...r.data);
    }
    t.same(got.map(Number), max, `${dtype}: the chunks make up the element-wise max`);
  }
  const sum = await run(peers, (p) => ({ kind: 'reduceScatter', dtype: 'float32', elements: [p + 0.5, 1, 2, 3, 4], op: 'sum' }));
  t.same(sum.sort((a, b) => a.rank - b.rank).flatMap((r) => r.data), [4.5, 3, 6, 9, 12], 'sum split 1/2/2');
});

t.test('varying sizes, concurrent tags, mismatches', async (t) => {
  const { peers } = await group(t, 3);
  const v = await run(peers, (p) => ({ kind: 'allGather', dtype: 'int32', elements: Array.from({ length: p * 2 }, (_, i) => p * 100 + i), varying: true }));
  for (const r of v) {
    t.equal(r.ok, true, String(r.message ?? 'ok'));
    t.same(r.counts, v[0].participants.map((id) => v.findIndex((x) => x.peer === id) * 2), 'counts learned from every peer');
  }
  // Two collectives in flight at once under different tags.
  const [a, b] = await Promise.all([
    run(peers, (p) => ({ kind: 'allGather', dtype: 'float32', elements: [p], tag: 10 })),
    run(peers, (p) => ({ kind: 'broadcast', dtype: 'float32', elements: [p, p], root: 0, tag: 11 })),
  ]);
  for (const r of a) t.equal(r.data.length, 3);
  for (const r of b) t.same(r.data, b.find((x) => x.rank === 0)!.data);
  // One peer passes a different length: a MismatchError naming both sides, inputs intact, no retry.
  const bad = await run(peers, (p) => ({ kind: 'allGather', dtype: 'float32', elements: Array.from({ length: p === 2 ? 5 : 4 }, () => 1), tag: 12, timeoutMs: 20_000 }));
  for (const r of bad) t.match(r, { ok: false, code: 'MISMATCH', intact: true, message: /disagree on all-gather/ });
});

t.test('a peer SIGKILLed mid-collective: survivors retry and the result follows them; a dead root fails clearly', async (t) => {
  const { peers } = await group(t, 3);
  const [a, b, c] = peers;
  const first = await run(peers, (p) => ({ kind: 'allGather', dtype: 'float32', elements: [p] }));
  const ids = first.map((r) => r.peer);
  // c never joins the next all-gather, nor the broadcast it is the root of, and dies: a and b retry the all-gather
  // with the two of them, and the broadcast finds its root gone.
  const big = (p: number) => ({ kind: 'allGather', dtype: 'float32', elements: Array.from({ length: 200_000 }, () => p + 1), tag: 5 });
  const bcast = (p: number) => ({ kind: 'broadcast', dtype: 'float32', elements: [p, 1], root: ids[2], tag: 6 });
  const pa = a.request('collective', big(0), 90_000) as unknown as Promise<R>;
  const pb = b.request('collective', big(1), 90_000) as unknown as Promise<R>;
  const ba = a.request('collective', bcast(0), 90_000) as unknown as Promise<R>;
  const bb = b.request('collective', bcast(1), 90_000) as unknown as Promise<R>;
  await new Promise((r) => setTimeout(r, 300));
  c.kill();
  for (const r of await Promise.all([pa, pb])) {
    t.equal(r.ok, true, String(r.message ?? 'ok'));
    t.equal(r.worldSize, 2, 'retried with the survivors');
    t.same([...r.participants].sort(), [ids[0], ids[1]].sort(), 'the result names the survivors');
    t.equal(r.data.length, 400_000, 'one part per participant');
  }
  for (const r of await Promise.all([ba, bb])) t.match(r, { ok: false, code: 'ROOT_LOST', intact: true, message: /root .* is not in group/ });
  await waitFor(() => !c.alive, 10_000, 'c to exit');
  // The chunks of a reduce-scatter now follow the two survivors.
  const rs = await run([a, b], (p) => ({ kind: 'reduceScatter', dtype: 'int32', elements: [1, 2, 3, 4, 5], op: 'sum' }));
  t.same(rs.map((r) => [r.rank, r.offset, r.data.length, r.worldSize]).sort(), [[0, 0, 2, 2], [1, 2, 3, 2]], 'split in two');
  t.same(rs.sort((x, y) => x.rank - y.rank).flatMap((r) => r.data), [2, 4, 6, 8, 10]);
  // A broadcast from a rank of the current group still works after the loss.
  const ok = await run([a, b], (p) => ({ kind: 'broadcast', dtype: 'float32', elements: [p, 7], root: 1 }));
  t.same(ok.map((r) => r.data), [ok[0].data, ok[0].data]);
});
