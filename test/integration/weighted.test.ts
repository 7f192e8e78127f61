// allReduce(x, { op: 'avg', weight }) between real peer processes: exact against the reference on every float
// dtype, bit-identical on every peer, reweighted over the survivors when a peer dies, clear errors.
import t, { Test } from 'tap';
import { Master } from '../../lib/master/master';
import type { DType } from '../../lib/dtype';
import { PeerProcess, startPeer, waitFor } from '../helpers/communicator';
import { fromBF16, fromF16, toBF16, toF16 } from '../helpers/half';
import { reference } from '../helpers/weighted';

async function group(t: Test, n: number): Promise<{ master: Master; peers: PeerProcess[] }> {
  const master = new Master({ logLevel: 'error', heartbeatIntervalMs: 200, peerTimeoutMs: 3000 });
  const port = await master.listen();
  const peers = Array.from({ length: n }, (_, i) =>
    startPeer({ master: `127.0.0.1:${port}`, connections: 1, listenHost: '127.0.0.1', worldSize: n, admission: 'auto', label: `w${i}` }));
  t.teardown(async () => {
    await Promise.all(peers.map((p) => p.stop()));
    await master.close();
  });
  for (const p of peers) t.equal((await p.ready).ev, 'ready');
  return { master, peers };
}

/** Raw elements of a dtype (uint16 bits for 16-bit floats) and the values they hold. */
function input(dtype: DType, p: number, n: number): { raw: number[]; values: number[] } {
  const v = Array.from({ length: n }, (_, i) => Math.fround(Math.sin(7 * p + i) * (1 + (i % 5)) / 3));
  if (dtype === 'float64') {
    const raw = v.map((x, i) => x + i * 1e-10);
    return { raw, values: raw };
  }
  if (dtype === 'float32') return { raw: v, values: v };
  const raw = v.map(dtype === 'float16' ? toF16 : toBF16);
  return { raw, values: raw.map(dtype === 'float16' ? fromF16 : fromBF16) };
}

t.test('two peers: the weighted average is exactly the reference on every float dtype', async (t) => {
  const { peers } = await group(t, 2);
  const weights = [3, 1234567];
  for (const dtype of ['float32', 'float64', 'float16', 'bfloat16'] as DType[]) {
    const ins = peers.map((_, p) => input(dtype, p, 1000));
    const rs = await Promise.all(peers.map((q, p) => q.request('weighted', { dtype, elements: ins[p].raw, weight: weights[p] }, 60_000)));
    const want = reference(dtype, ins.map((x) => x.values), weights);
    for (const r of rs) {
      t.equal(r.ok, true, `${dtype}: ${String(r.message ?? 'ok')}`);
      t.equal(r.worldSize, 2);
      t.same(r.elements, want, `${dtype}: exactly sum(w x) / sum(w)`);
    }
  }
  // Bad weights fail before anything is sent; a zero total fails on every peer; inputs stay intact.
  const bad = await peers[0].request('weighted', { dtype: 'float32', elements: [1, 2], weight: -1 });
  t.match(bad, { ok: false, code: 'INVALID_ARGUMENT', intact: true, message: /finite number >= 0/ });
  const zero = await Promise.all(peers.map((q) => q.request('weighted', { dtype: 'float32', elements: [1, 2], weight: 0 }, 60_000)));
  for (const z of zero) t.match(z, { ok: false, code: 'INVALID_ARGUMENT', intact: true, message: /total weight is 0/ });
  const again = await Promise.all(peers.map((q, p) => q.request('weighted', { dtype: 'float32', elements: [p, 8], weight: p + 1 }, 60_000)));
  t.same(again.map((r) => r.elements), [[Math.fround(2 / 3), 8], [Math.fround(2 / 3), 8]], 'the group goes on after the error');
});

t.test('three peers: bit-identical and exact; a peer lost mid-operation makes the retry reweight over the survivors', async (t) => {
  const { peers } = await group(t, 3);
  const [a, b, c] = peers;
  // Values and weights whose sums and quotients are exact in float32: the result does not depend on the ring order.
  const x = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]];
  const w = [1, 2, 5];
  const rs = await Promise.all(peers.map((q, p) => q.request('weighted', { dtype: 'float32', elements: x[p], weight: w[p], many: true }, 60_000)));
  const want = [0, 1, 2, 3].map((i) => (1 * x[0][i] + 2 * x[1][i] + 5 * x[2][i]) / 8);
  for (const r of rs) t.same(r.elements, want, 'every peer: (1 a + 2 b + 5 c) / 8');
  // c never starts the next one and dies: a and b retry with the two of them and weights 1 and 2.
  const pa = a.request('weighted', { dtype: 'float32', elements: x[0], weight: 1, many: true }, 90_000);
  const pb = b.request('weighted', { dtype: 'float32', elements: x[1], weight: 2, many: true }, 90_000);
  await new Promise((r) => setTimeout(r, 300));
  c.kill();
  const [ra, rb] = await Promise.all([pa, pb]);
  const survivors = [0, 1, 2, 3].map((i) => Math.fround((x[0][i] + 2 * x[1][i]) / 3));
  for (const r of [ra, rb]) {
    t.equal(r.ok, true, String(r.message ?? 'ok'));
    t.equal(r.worldSize, 2, 'retried with the survivors');
    t.same(r.elements, survivors, 'reweighted over the survivors: (1 a + 2 b) / 3');
  }
  await waitFor(() => !c.alive, 10_000, 'c to exit');
});
