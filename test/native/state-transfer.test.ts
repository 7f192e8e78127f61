// Shared-state transfer between real engines in real peer processes: late joiner, one altered entry, several
// sources, a lying source (hash mismatch and retry), a source killed mid-transfer, and 256 MiB with checks.
import t from 'tap';
import { collectReports, formGroup, startStatePeers, stopStatePeers, syncOnce, StatePeer } from '../helpers/state';
import { electWithout } from '../../lib/shared-state/election';
import type { EntrySpec } from '../helpers/state';

const MiB = 1 << 20;

function layout(seed: number, scale = 1): EntrySpec[] {
  return [
    { key: 'weights', dtype: 'float32', length: 3 * MiB * scale + 7, seed },
    { key: 'adam.m', dtype: 'bfloat16', length: 2 * MiB * scale + 1, seed: seed + 1 },
    { key: 'step', dtype: 'int64', length: 1, seed: seed + 2 },
    { key: 'tiny', dtype: 'uint8', length: 3, seed: seed + 3 },
  ];
}

async function make(p: StatePeer, entries: EntrySpec[], revision: number, alter?: unknown[]) {
  const r = await p.request({ cmd: 'make', entries, revision, alter });
  if (!r.ok) throw new Error(`make failed on ${p.id}`);
}

t.test('a late joiner receives the full state from two sources; allowContentInequality entries stay its own', async (t) => {
  const peers = await startStatePeers(3);
  t.teardown(() => stopStatePeers(peers));
  await formGroup(peers);
  const rng = (seed: number): EntrySpec => ({ key: 'rng', dtype: 'uint32', length: 1000, seed, allowContentInequality: true });
  await make(peers[0], [...layout(1), rng(50)], 4);
  await make(peers[1], [...layout(1), rng(51)], 4);
  await make(peers[2], [...layout(999), rng(52)], 0); // the joiner: same layout, other bytes, revision 0
  const joinerRng = (await peers[2].request({ cmd: 'hashAll' })).all.rng;
  const reports = await collectReports(peers, { p2: 'receiveOnly' });
  const { decision, replies } = await syncOnce(peers, reports);
  t.same(decision.sources, ['p0', 'p1']);
  t.same(decision.outdated, { p2: ['adam.m', 'step', 'tiny', 'weights'] });
  for (const id of ['p0', 'p1', 'p2']) t.ok(replies[id].ok, `${id} succeeded ${replies[id].message ?? ''}`);
  const total = (3 * MiB + 7) * 4 + (2 * MiB + 1) * 2 + 8 + 3;
  t.equal(replies.p2.result.bytesReceived, total, 'the joiner received every synced byte once');
  t.ok(replies.p0.result.bytesSent > 0 && replies.p1.result.bytesSent > 0, `both sources sent (${replies.p0.result.bytesSent} + ${replies.p1.result.bytesSent})`);
  t.equal(replies.p0.result.bytesSent + replies.p1.result.bytesSent, total);
  t.same(replies.p2.after, replies.p0.after, 'the joiner now hashes exactly like the sources (revision included)');
  t.equal(replies.p2.after.revision, 4);
  t.same(replies.p2.result.changedKeys, ['adam.m', 'step', 'tiny', 'weights']);
  t.equal((await peers[2].request({ cmd: 'hashAll' })).all.rng, joinerRng, 'allowContentInequality entry untouched');
});

t.test('a peer with one altered entry receives only that entry; a lying source is detected and retried', async (t) => {
  const peers = await startStatePeers(4);
  t.teardown(() => stopStatePeers(peers));
  await formGroup(peers);
  for (const p of peers.slice(0, 3)) await make(p, layout(7), 10);
  await make(peers[3], layout(7), 10, [{ key: 'adam.m', index: 12345 }]);
  let reports = await collectReports(peers);
  let { decision, replies } = await syncOnce(peers, reports);
  t.same(decision.outdated, { p3: ['adam.m'] });
  t.ok(replies.p3.ok, 'the drifted peer was corrected');
  t.equal(replies.p3.result.bytesReceived, (2 * MiB + 1) * 2, 'only the altered entry moved');
  t.same(replies.p3.result.changedKeys, ['adam.m']);
  t.same(replies.p3.after, replies.p0.after);

  // p3 drifts again; after the reports p0's copy of the entry is damaged, so whatever p0 sends fails the hash.
  await peers[3].request({ cmd: 'alter', alter: [{ key: 'weights', index: 77 }] });
  reports = await collectReports(peers);
  await peers[0].request({ cmd: 'alter', alter: [{ key: 'weights', index: 5 }, { key: 'weights', index: 3 * MiB * 4 }] });
  ({ decision, replies } = await syncOnce(peers, reports, { tag: 200 }));
  t.same(decision.sources, ['p0', 'p1', 'p2']);
  t.ok(replies.p3.ok, `the receiver finished from the honest sources ${replies.p3.message ?? ''}`);
  t.ok(replies.p3.result.rounds >= 2, `retried (${replies.p3.result.rounds} rounds)`);
  t.same(replies.p3.result.retried.slice(0, 1), ['weights']);
  t.same(replies.p3.after, replies.p1.after, 'and holds the elected bytes');
  t.ok(replies.p0.result.retried.includes('p3/weights'), 'the sources learned of the retry');

  // Only a lying source left: after every retry the receiver reports a StateError and keeps its own bytes.
  await peers[3].request({ cmd: 'alter', alter: [{ key: 'tiny', index: 1 }] });
  reports = (await collectReports(peers)).filter((r) => r.peerId === 'p0' || r.peerId === 'p3');
  await peers[0].request({ cmd: 'alter', alter: [{ key: 'tiny', index: 2 }] });
  const dec = (await import('../../lib/shared-state/election')).electSharedState(
    reports.map((r) => (r.peerId === 'p3' ? { ...r, strategy: 'receiveOnly' as const } : r)),
  );
  const [a, b] = await Promise.all([
    peers[0].request({ cmd: 'execute', decision: dec, tag: 300 }),
    peers[3].request({ cmd: 'execute', decision: dec, tag: 300 }),
  ]);
  t.ok(a.ok, 'the source itself finishes');
  t.same(a.result.unresolved, ['p3/tiny'], 'and knows the receiver could not verify');
  t.equal(b.ok, false);
  t.equal(b.code, 'STATE_HASH_MISMATCH', b.message);
  t.match(b.message, /"tiny".*p0/);
  t.equal(b.unchanged, true, 'the receiver state is unchanged');
});

t.test('a source killed mid-transfer: the receiver keeps its state, then finishes from the survivor', async (t) => {
  const peers = await startStatePeers(3, { TCCL_TEST_CONNECTIONS: '2' });
  t.teardown(() => stopStatePeers(peers));
  await formGroup(peers);
  const big: EntrySpec[] = [{ key: 'w', dtype: 'float32', length: 48 * MiB, seed: 3 }, { key: 'v', dtype: 'float32', length: 16 * MiB, seed: 4 }];
  await make(peers[0], big, 1);
  await make(peers[1], big, 1);
  await make(peers[2], big.map((e) => ({ ...e, seed: e.seed + 100 })), 0);
  const reports = await collectReports(peers, { p2: 'receiveOnly' });
  const decision = (await import('../../lib/shared-state/election')).electSharedState(reports);
  const pending = peers.map((p) => p.request({ cmd: 'execute', decision, tag: 100, timeoutMs: 10_000 }));
  // p0 is killed as soon as it starts sending (the receiver needs p1's share too, so it cannot be done yet).
  await new Promise((r) => setTimeout(r, 20));
  peers[0].kill();
  const [, r1, r2] = await Promise.all(pending);
  t.equal(r2.ok, false, 'the receiver\'s first attempt failed');
  t.equal(r2.code, 'PEER_LOST', r2.message);
  t.equal(r2.unchanged, true, 'its state is exactly as before: never half-written');
  t.equal(r1.ok, false, `the surviving source learned of the loss too (${r1.code})`);
  // The group re-forms without p0 and the master re-decides with the survivors' (still valid) reports.
  const survivors = [peers[1], peers[2]];
  await formGroup(survivors, 2);
  const again = await syncOnce(survivors, [], { decision: electWithout(reports, ['p0']) });
  t.same(again.decision.sources, ['p1']);
  t.ok(again.replies.p2.ok, `the receiver finished from p1 ${again.replies.p2.message ?? ''}`);
  t.same(again.replies.p2.after, again.replies.p1.after, 'hashes match');
});

t.test('256 MiB of state to a joiner from three sources, verified', async (t) => {
  const peers = await startStatePeers(4);
  t.teardown(() => stopStatePeers(peers));
  await formGroup(peers);
  const entries: EntrySpec[] = [
    { key: 'emb', dtype: 'float32', length: 40 * MiB, seed: 11 },
    { key: 'blocks', dtype: 'float16', length: 40 * MiB, seed: 12 },
    { key: 'head', dtype: 'float64', length: 2 * MiB, seed: 13 },
  ]; // 160 + 80 + 16 = 256 MiB
  await Promise.all(peers.slice(0, 3).map((p) => make(p, entries, 3)));
  await make(peers[3], entries.map((e) => ({ ...e, seed: 0 })), 0);
  const reports = await collectReports(peers);
  const { decision, replies } = await syncOnce(peers, reports);
  t.equal(decision.transfers.reduce((s, x) => s + x.length, 0), 256 * MiB);
  t.ok(replies.p3.ok, replies.p3.message ?? 'ok');
  t.equal(replies.p3.result.bytesReceived, 256 * MiB);
  t.same(replies.p3.after, replies.p0.after, 'every entry hashes to the elected value');
  t.comment(`256 MiB from 3 sources in ${replies.p3.ms.toFixed(0)} ms (${((256 * MiB) / replies.p3.ms / 1e6).toFixed(2)} GB/s incl. verification and commit)`);
});
