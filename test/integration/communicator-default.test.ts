// The process-wide default communicator: init() from environment variables, top-level allReduce().
import t from 'tap';
import { Master } from '../../lib/master/master';
import { init, allReduce, shutdown, defaultCommunicator } from '../../lib/default';
import { Communicator } from '../../lib/peer/communicator';
import { ClosedError, TooFewPeersError } from '../../lib/errors';

t.test('init() reads TCCL_MASTER, TCCL_PEER_GROUP and TCCL_TOKEN', async (t) => {
  const master = new Master({ logLevel: 'silent', token: 's3cret' });
  const port = await master.listen();
  t.teardown(() => master.close());
  t.throws(() => defaultCommunicator(), ClosedError, 'before init');
  process.env.TCCL_MASTER = `127.0.0.1:${port}`;
  process.env.TCCL_PEER_GROUP = '3';
  process.env.TCCL_TOKEN = 's3cret';
  t.teardown(() => {
    delete process.env.TCCL_MASTER;
    delete process.env.TCCL_PEER_GROUP;
    delete process.env.TCCL_TOKEN;
  });
  const c = await init({ connections: 1, listenHost: '127.0.0.1', logLevel: 'silent' });
  t.teardown(() => shutdown());
  t.equal(await init(), c, 'init() twice gives the same communicator');
  t.equal(c.peerGroup, 3);
  t.same(master.groupsInfo().map((g) => g.peerGroup), [3]);
  const x = new Float32Array([1.5, 2.5]);
  const r = await allReduce(x);
  t.equal(r.worldSize, 1, 'a group of one is a valid all-reduce');
  t.same(Array.from(x), [1.5, 2.5], 'and returns the input');

  // A second peer joins; with two, allReduceMany works; when the other leaves mid-way, TooFewPeersError.
  const other = await (async () => {
    const p = Communicator.connect({ master: `127.0.0.1:${port}`, peerGroup: 3, token: 's3cret', connections: 1, listenHost: '127.0.0.1', logLevel: 'silent' });
    while (!c.arePeersPending()) await new Promise((r) => setTimeout(r, 10));
    await c.updateTopology();
    return p;
  })();
  const arrays = [new Float32Array([1]), new Float32Array([2])];
  const mine = [new Float32Array([10]), new Float32Array([20])];
  const [rs] = await Promise.all([c.allReduceMany(arrays), other.allReduceMany(mine)]);
  t.same(rs.map((q) => q.worldSize), [2, 2]);
  t.same(arrays.map((a) => a[0]), [11, 22]);
  // c starts a batch the other never joins; the other leaves: the batch cannot finish with one peer.
  const lonely = [new Float32Array([5]), new Float32Array([6])];
  const batch = c.allReduceMany(lonely, { tagBase: 100 });
  batch.catch(() => undefined);
  await new Promise((r) => setTimeout(r, 100));
  await other.close();
  await t.rejects(batch, TooFewPeersError, 'allReduceMany: TooFewPeersError when the group falls below two');
  t.same(lonely.map((a) => a[0]), [5, 6], 'the inputs are intact');
  while (c.groupWorldSize !== 1) await new Promise((r) => setTimeout(r, 10));
  t.same(Array.from((await allReduce(new Float32Array([4]))).data), [4], 'alone again: allReduce returns the input');
});
