// The run survives its master (issue 13): a master process is SIGKILLed while its peers work, and a new one is
// started on the same port; the peers resume with their own ids and state, and the new master rebuilds each
// group from their reports (lib/master/resume.ts, docs/master.md "Restart and fail-over").
import t, { Test } from 'tap';
import { PeerProcess, expectedFirst, startPeer, waitFor } from '../helpers/communicator';
import { freePorts, stopAll } from '../harness/process';

const TOKEN = 'restart-test-token';
const MASTER_OPTS = { token: TOKEN, heartbeatIntervalMs: 100, peerTimeoutMs: 1000, resumeWindowMs: 3000 };

function startMaster(port: number, extra: object = {}): PeerProcess {
  return new PeerProcess('test/fixtures/master-process.ts', { argv: [JSON.stringify({ ...MASTER_OPTS, port, ...extra })] });
}

async function groups(m: PeerProcess): Promise<{ members: string[]; pending: string[]; epoch: number }[]> {
  return (await m.request('groups', {}, 10_000)).groups as { members: string[]; pending: string[]; epoch: number }[];
}

/** Four looping peers; returns them and their ids. */
async function startGroup(t: Test, port: number, n = 4, extra: (i: number) => object = () => ({})) {
  const peers: PeerProcess[] = [];
  for (let i = 0; i < n; i++) {
    const p = startPeer({ master: `127.0.0.1:${port}`, token: TOKEN, value: i + 1, ...extra(i) });
    if (i > 0) {
      // Vote the newcomer in, once it is pending.
      await waitFor(async () => (await peers[0].request('state', {}, 5000)).pending === true, 20_000, 'the newcomer pending');
      await Promise.all(peers.map((q) => q.request('updateTopology', {}, 20_000)));
    }
    peers.push(p);
    const r = await p.ready;
    t.equal(r.ev, 'ready', `peer ${i + 1} connected`);
  }
  await waitFor(async () => (await Promise.all(peers.map((p) => p.request('state', {}, 5000)))).every((s) => s.groupWorldSize === n), 20_000, 'the group');
  const ids = (await Promise.all(peers.map((p) => p.request('state', {}, 5000)))).map((s) => s.peer as string);
  return { peers, ids };
}

/** Every peer's step events agree: same results, same state, correct sums, own id. */
function checkSteps(t: Test, peers: PeerProcess[], ids: string[], steps: number): void {
  const values = peers.map((_, i) => i + 1);
  for (let s = 0; s < steps; s++) {
    const evs = peers.map((p) => p.events.find((e) => e.ev === 'step' && e.step === s));
    if (evs.some((e) => !e)) {
      t.fail(`step ${s} missing on ${evs.map((e, i) => (e ? '' : ids[i])).join(' ')}`);
      return;
    }
    t.same(new Set(evs.map((e) => e!.many)).size, 1, `step ${s}: every peer holds the same all-reduce results`);
    t.same(new Set(evs.map((e) => e!.state)).size, 1, `step ${s}: every peer holds the same shared state`);
    t.same(evs[0]!.first, expectedFirst(values, s), `step ${s}: the sum is right`);
    t.same(evs.map((e) => e!.id), ids, `step ${s}: every peer kept its id`);
  }
}

t.test('SIGKILL the master while 4 peers loop; a new master on the same port: everyone continues', async (t) => {
  const [port] = await freePorts(1);
  let master = startMaster(port);
  await master.ready;
  const { peers, ids } = await startGroup(t, port, 4, (i) => ({ drift: i === 3 }));
  t.teardown(() => stopAll([...peers, master]));
  const steps = 30;
  const loops = peers.map((p, i) => p.request('loop', { steps, n: 1000, count: 3, length: 65536, drift: i === 3 }, 40_000));
  await peers[0].next((e) => e.ev === 'step' && (e.step as number) >= 5, 60_000);
  master.kill('SIGKILL');
  await master.exited;
  const killedAt = Date.now();
  await new Promise((r) => setTimeout(r, 1000));
  master = startMaster(port);
  await master.ready;
  const results = await Promise.all(loops);
  for (const [i, r] of results.entries()) t.equal(r.ok, true, `peer ${ids[i]} finished its loop: ${r.message ?? ''}`);
  checkSteps(t, peers, ids, steps);
  const g = await groups(master);
  t.same(g[0].members.slice().sort(), ids.slice().sort(), 'the new master rebuilt the group with the same peers');
  const evs = (await master.request('events', {}, 5000)).events as { what: string }[];
  t.notOk(evs.some((e) => e.what.startsWith('peer joined')), 'nobody was admitted as a new peer');
  t.ok(evs.some((e) => e.what === "group rebuilt from its peers' reports"), 'the group was rebuilt');
  t.ok(Date.now() - killedAt < 120_000);
});

for (const [name, dieOn] of [
  ['during a vote', { what: 'vote', nth: 9 }],
  ['during a shared-state transfer', { what: 'shared-state elected', nth: 3 }],
] as const) {
  t.test(`the master killed ${name}: the run continues`, async (t) => {
    const [port] = await freePorts(1);
    let master = startMaster(port, { dieOn, logLevel: 'debug' });
    await master.ready;
    const { peers, ids } = await startGroup(t, port, 4, (i) => ({ drift: i === 3 }));
    t.teardown(() => stopAll([...peers, master]));
    const steps = 12;
    const loops = peers.map((p, i) => p.request('loop', { steps, n: 500, count: 2, length: 65536, drift: i === 3 }, 120_000));
    await master.exited;
    t.ok(master.events.some((e) => e.ev === 'dying'), `the master died ${name}`);
    await new Promise((r) => setTimeout(r, 500));
    master = startMaster(port);
    await master.ready;
    const results = await Promise.all(loops);
    for (const [i, r] of results.entries()) t.equal(r.ok, true, `peer ${ids[i]} finished its loop: ${r.message ?? ''}`);
    checkSteps(t, peers, ids, steps);
  });
}

t.test('the master killed twice in a row', async (t) => {
  const [port] = await freePorts(1);
  let master = startMaster(port);
  await master.ready;
  const { peers, ids } = await startGroup(t, port, 3);
  t.teardown(() => stopAll([...peers, master]));
  const steps = 30;
  const loops = peers.map((p) => p.request('loop', { steps, n: 500, count: 2, length: 1024 }, 120_000));
  for (const at of [4, 12]) {
    await peers[0].next((e) => e.ev === 'step' && (e.step as number) >= at, 60_000);
    master.kill('SIGKILL');
    await master.exited;
    await new Promise((r) => setTimeout(r, 300));
    master = startMaster(port);
    await master.ready;
  }
  const results = await Promise.all(loops);
  for (const [i, r] of results.entries()) t.equal(r.ok, true, `peer ${ids[i]} finished its loop: ${r.message ?? ''}`);
  checkSteps(t, peers, ids, steps);
});

t.test('the master killed while a joiner is pending: it is admitted later, with its id', async (t) => {
  const [port] = await freePorts(1);
  let master = startMaster(port);
  await master.ready;
  const { peers, ids } = await startGroup(t, port, 3);
  const joiner = startPeer({ master: `127.0.0.1:${port}`, token: TOKEN, value: 4 });
  t.teardown(() => stopAll([...peers, joiner, master]));
  await waitFor(async () => (await groups(master))[0].pending.length === 1, 20_000, 'the joiner pending');
  const pendingId = (await groups(master))[0].pending[0];
  master.kill('SIGKILL');
  await master.exited;
  master = startMaster(port);
  await master.ready;
  // The members' reports complete the rebuild; the joiner (pending: no ring to wait for) may resume after it.
  await waitFor(async () => ((await groups(master))[0]?.members.length ?? 0) === 3 && (await groups(master))[0].pending.length === 1, 20_000, 'the rebuilt group');
  t.same((await groups(master))[0].pending, [pendingId], 'the joiner is still pending, with its id');
  await Promise.all(peers.map((p) => p.request('updateTopology', {}, 20_000)));
  const r = await joiner.ready;
  t.equal(r.ev, 'ready', 'the joiner was admitted');
  t.equal(r.id, pendingId, 'with the id it had');
  const all = [...peers, joiner];
  const rs = await Promise.all(all.map((p) => p.request('allReduce', { n: 100, step: 1 }, 30_000)));
  for (const x of rs) t.same(x.first, expectedFirst([1, 2, 3, 4], 1), 'the all-reduce over all four is right');
  t.same((await groups(master))[0].members.slice().sort(), [...ids, pendingId].sort());
});

