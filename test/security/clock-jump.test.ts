// Issue 21: deadlines and heartbeats run on a monotonic clock. The master's wall clock jumps an hour forward (an
// NTP step, a VM resumed): nobody is dropped and the members go on. Then it jumps two hours back and a member is
// frozen (SIGSTOP): it is still dropped within the peer timeout. With Date.now() driving the deadlines, a clock
// stepped back disabled failure detection: the frozen member stayed in the ring for the hour.
import t from 'tap';
import { Master } from '../../lib/master/master';
import { Communicator } from '../../lib/peer/communicator';
import { PeerProcess, waitFor } from '../harness/process';

t.test('a wall clock stepped forward or back changes nothing', async (t) => {
  const master = new Master({ logLevel: 'silent', heartbeatIntervalMs: 100, peerTimeoutMs: 1000 });
  await master.listen();
  t.teardown(() => master.close());
  const opts = { master: master.address, logLevel: 'silent' as const, listenHost: '127.0.0.1', connections: 1 };
  const a = await Communicator.connect(opts);
  t.teardown(() => a.close());
  const b = new PeerProcess('test/fixtures/communicator-peer.ts', { argv: [JSON.stringify(opts)] });
  t.teardown(() => b.kill());
  await waitFor(() => a.arePeersPending(), 30_000, 'b pending');
  await a.updateTopology();
  await b.ready;
  const real = Date.now;
  t.teardown(() => { Date.now = real; });

  Date.now = () => real() + 3_600_000;
  await new Promise((r) => setTimeout(r, 1500)); // several heartbeat ticks, more than the peer timeout
  t.same(master.groupsInfo()[0].members.length, 2, 'nobody dropped with the wall clock an hour ahead');
  const [ra, rb] = await Promise.all([a.allReduce(new Float32Array(4), { timeoutMs: 10_000 }), b.request('allReduce', { n: 4, timeoutMs: 10_000 }, 20_000)]);
  t.equal(ra.worldSize, 2);
  t.ok(rb.ok, 'and they all-reduce');

  Date.now = () => real() - 3_600_000;
  b.kill('SIGSTOP');
  await waitFor(() => master.groupsInfo()[0].members.length === 1, 15_000, 'the frozen member dropped with the wall clock an hour behind')
    .then(() => t.pass('the frozen member is dropped with the wall clock an hour behind'), (err: Error) => t.fail(err.message));
  b.kill('SIGKILL');
});
