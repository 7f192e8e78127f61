// Training code that just works (issue 25): init() waits for TCCL_WORLD_SIZE, a plain allReduce loop admits a
// newcomer by itself (the master announces the boundary, the library votes), waitForPeers times out with a
// clear error, and a peer running alone with peers pending says what to do. Real master, real peer processes.
import t, { Test } from 'tap';
import { Master } from '../../lib/master/master';
import { Communicator } from '../../lib/peer/communicator';
import { TimeoutError } from '../../lib/errors';
import { PeerProcess, waitFor } from '../harness/process';
import { startPeer } from '../helpers/communicator';

const SCRIPT = 'test/fixtures/init-loop.ts';

async function startMaster(t: Test): Promise<{ master: Master; address: string; procs: PeerProcess[] }> {
  const master = new Master({ logLevel: 'error', heartbeatIntervalMs: 200, peerTimeoutMs: 3000, token: 'tok' });
  const port = await master.listen();
  const procs: PeerProcess[] = [];
  t.teardown(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await master.close();
  });
  return { master, address: `127.0.0.1:${port}`, procs };
}

function worker(procs: PeerProcess[], address: string, env: Record<string, string>): PeerProcess {
  const p = new PeerProcess(SCRIPT, { env: { TCCL_MASTER: address, TCCL_TOKEN: 'tok', ...env } });
  procs.push(p);
  return p;
}

const steps = (p: PeerProcess) => p.events.filter((e) => e.ev === 'step');

t.test('TCCL_WORLD_SIZE=2: two init() + allReduce processes see world 2 and the exact sum at every step', async (t) => {
  const { address, procs } = await startMaster(t);
  const a = worker(procs, address, { TCCL_WORLD_SIZE: '2', TCCL_TEST_VALUE: '1', TCCL_TEST_STEPS: '20' });
  // The second starts a little later: the first must wait for it in init(), not run alone.
  await a.next((e) => e.ev === 'ready' || e.ev === 'step', 1500).catch(() => undefined);
  t.equal(steps(a).length, 0, 'the first worker does not start stepping alone');
  const b = worker(procs, address, { TCCL_WORLD_SIZE: '2', TCCL_TEST_VALUE: '2', TCCL_TEST_STEPS: '20' });
  for (const p of [a, b]) t.equal((await p.next((e) => e.ev === 'done' || e.ev === 'connectError', 60_000))?.ev, 'done');
  for (const p of [a, b]) {
    const s = steps(p);
    t.equal(s.length, 20);
    t.ok(s.every((e) => e.worldSize === 2 && e.sum === 3 && e.stepSum === 2 * (e.step as number)), 'world 2 and the exact sum at every step');
  }
});

t.test('a third process started later is admitted by the plain allReduce loops, without updateTopology', async (t) => {
  const { master, address, procs } = await startMaster(t);
  const loop = { TCCL_WORLD_SIZE: '2', TCCL_TEST_UNTIL_WORLD: '3', TCCL_TEST_STEPS_AT: '5', TCCL_TEST_SLEEP_MS: '20' };
  const a = worker(procs, address, { ...loop, TCCL_TEST_VALUE: '1' });
  const b = worker(procs, address, { ...loop, TCCL_TEST_VALUE: '2' });
  await waitFor(() => steps(a).length >= 5 && steps(b).length >= 5, 60_000, 'the two to run steps');
  const c = worker(procs, address, { ...loop, TCCL_TEST_VALUE: '4' });
  for (const p of [a, b, c]) t.equal((await p.next((e) => e.ev === 'done' || e.ev === 'connectError', 90_000))?.ev, 'done');
  for (const p of [a, b]) {
    const s = steps(p);
    t.ok(s.every((e) => (e.worldSize === 2 && e.sum === 3) || (e.worldSize === 3 && e.sum === 7)), 'every step: the exact sum of its world');
    const grownAt = s.findIndex((e) => e.worldSize === 3);
    t.ok(grownAt > 0 && s.slice(grownAt).every((e) => e.worldSize === 3), 'the loop grew to 3 and stayed there');
  }
  t.ok(steps(c).length >= 5 && steps(c).every((e) => e.worldSize === 3 && e.sum === 7), 'the newcomer ran in the grown group');
  t.ok(master.events().some((e) => e.what.startsWith('admission announced')), 'the master announced the boundary');
});

t.test('waitForPeers times out with a clear error naming who is missing', async (t) => {
  const { address } = await startMaster(t);
  const opts = { master: address, token: 'tok', connections: 1, listenHost: '127.0.0.1', logLevel: 'silent' as const };
  await t.rejects(Communicator.connect({ ...opts, worldSize: 0 }), { code: 'INVALID_ARGUMENT' }, 'worldSize 0 is refused');
  const a = await Communicator.connect({ ...opts, label: 'first' });
  t.teardown(() => a.close());
  const err = await a.waitForPeers(3, { timeoutMs: 800 }).then(() => undefined, (e: Error) => e);
  t.ok(err instanceof TimeoutError, 'TimeoutError');
  t.match(err?.message, /waitForPeers\(3\) timed out after 800 ms: group 0 has 1 member\(s\) \(p\d+\), 2 missing; 0 peer\(s\) pending/);
  // waitForPeers votes a pending peer in.
  const x = Communicator.connect({ ...opts, label: 'x', timeoutMs: 0 });
  await waitFor(() => a.arePeersPending(), 20_000, 'the second peer to be pending');
  await a.waitForPeers(2, { timeoutMs: 20_000 });
  const xc = await x;
  t.teardown(() => xc.close());
  await xc.waitForPeers(2, { timeoutMs: 20_000 });
  t.equal(a.groupWorldSize, 2, 'waitForPeers voted the pending peer in');
  // A member that does not take part (x) keeps the vote from completing: the error names the pending peer.
  const late = Communicator.connect({ ...opts, label: 'late', timeoutMs: 0 });
  late.catch(() => undefined);
  t.teardown(async () => (await late.catch(() => undefined))?.close());
  await waitFor(() => a.arePeersPending(), 20_000, 'the third peer to be pending');
  const err2 = await a.waitForPeers(3, { timeoutMs: 1000 }).then(() => undefined, (e: Error) => e);
  t.ok(err2 instanceof TimeoutError, 'TimeoutError');
  t.match(err2?.message, /2 member\(s\) \(p\d+, p\d+\), 1 missing; 1 peer\(s\) pending: p\d+ late/);
  await xc.updateTopology(); // x's vote completes the one a cast: the late peer is in
  await (await late).waitForPeers(3, { timeoutMs: 20_000 });
  t.equal(a.groupWorldSize, 3);
});

t.test('a manual peer that runs alone while peers wait to join says what to do', async (t) => {
  const { address, procs } = await startMaster(t);
  const a = startPeer({ master: address, token: 'tok', connections: 1, listenHost: '127.0.0.1', warnAloneMs: 300, label: 'alone' });
  procs.push(a);
  t.equal((await a.ready).ev, 'ready');
  const b = startPeer({ master: address, token: 'tok', connections: 1, listenHost: '127.0.0.1', label: 'waiting' });
  procs.push(b);
  await waitFor(async () => (await a.request('state')).pending === true, 20_000, 'b to be pending');
  const deadline = Date.now() + 20_000;
  while (!/running alone/.test(a.stderr) && Date.now() < deadline) {
    t.equal((await a.request('allReduce', { n: 4 })).worldSize, 1);
    await new Promise((r) => setTimeout(r, 100));
  }
  t.match(a.stderr, /running alone in group 0 for \d+ s while 1 peer\(s\) wait to join \(p\d+ waiting\): call comm\.updateTopology\(\) on every member/);
  t.equal((await a.request('updateTopology')).accepted, 1, 'doing what it says admits the peer');
});
