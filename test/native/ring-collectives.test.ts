// RingGroup.broadcast / allGather / reduceScatter: three static groups' members in one process on loopback.
import t from 'tap';
import { Engine } from '../../lib/engine';
import { RingGroup } from '../../lib/group';

t.test('a static group broadcasts, all-gathers and reduce-scatters', async (t) => {
  const engines = [0, 1, 2].map(() => Engine.create({ host: '127.0.0.1', connections: 2 }));
  const peers = engines.map((e) => `127.0.0.1:${e.port}`);
  const groups = engines.map((e, r) => RingGroup.fromEngine(e, r, peers));
  t.teardown(() => Promise.all(groups.map((g) => g.close())));
  const n = 10_001;
  const ins = groups.map((_, r) => Float64Array.from({ length: n }, (_, i) => i * 0.5 + r));
  const gathered = await Promise.all(groups.map((g, r) => g.allGather(ins[r], { tag: 1 })));
  const want = new Float64Array(3 * n);
  ins.forEach((a, r) => want.set(a, r * n));
  for (const g of gathered) t.same(g.data, want, 'rank order');
  const rs = await Promise.all(groups.map((g, r) => g.reduceScatter(ins[r], { op: 'sum', tag: 2 })));
  const sum = Float64Array.from({ length: n }, (_, i) => ins[0][i] + ins[1][i] + ins[2][i]);
  for (const [r, x] of rs.entries()) {
    t.equal(x.offset, Math.floor((n * r) / 3));
    t.same(x.data, sum.slice(x.offset, x.offset + x.data.length), `rank ${r}: its chunk of the sum`);
  }
  const copies = ins.map((a) => a.slice());
  await Promise.all(groups.map((g, r) => g.broadcast(copies[r], { root: 2, tag: 3 })));
  for (const c of copies) t.same(c, ins[2], "rank 2's data everywhere");
  await t.rejects(groups[0].broadcast(copies[0], { root: 3 }), { code: 'INVALID_ARGUMENT' });
});
