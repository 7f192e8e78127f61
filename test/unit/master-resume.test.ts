// The rebuild of a group from its peers' reports (lib/master/resume.ts) and the coordinator's resume window,
// in-process with a fake clock.
import t from 'tap';
import { MAX_EPOCH, MAX_EPOCH_LEAD, RejoinReport, allReported, checkAgainstReports, checkReport, planRebuild } from '../../lib/master/resume';
import type { ResumeReport } from '../../lib/protocol';
import { Sim } from '../helpers/coordinator-sim';

const ring = (...ids: string[]) => ids.map((id, i) => ({ id: `${id}@127.0.0.1:${4000 + i}`, host: '127.0.0.1', port: 4000 + i }));
const rep = (over: Partial<ResumeReport> = {}): ResumeReport => ({
  epoch: 3, member: true, ring: ring('p1', 'p2', 'p3'), committed: [], lastSync: 0, committedSync: 0, committedRevision: 0, states: [], ...over,
});
const rj = (peer: string, report: ResumeReport): RejoinReport => ({ peer, group: 0, host: '127.0.0.1', port: 4000, report });

t.test('planRebuild: the newest ring orders the members; those two reporters of it left out are excluded; pending stay pending', async (t) => {
  const plan = planRebuild([
    rj('p3', rep({ epoch: 4, ring: ring('p1', 'p3', 'p5') })),
    rj('p1', rep({ epoch: 4, ring: ring('p1', 'p3', 'p5') })), // p2 was dropped in epoch 4, p5 accepted
    rj('p2', rep()),
    rj('p5', rep({ epoch: 0, member: false, ring: [] })), // never got ring 4
    rj('p7', rep({ epoch: 0, member: false, ring: [] })),
  ]);
  t.equal(plan.fromEpoch, 4);
  t.same(plan.members, ['p1', 'p3', 'p5'], 'ring order of the newest epoch; the accepted joiner is a member');
  t.same(plan.pending, ['p7']);
  t.same(plan.excluded.map((x) => x.peer), ['p2']);
  t.match(plan.excluded[0].reason, /re-formed without it by epoch 4 \(as p1, p3 report\)/);
  const one = planRebuild([rj('p3', rep()), rj('p1', rep({ epoch: 4, ring: ring('p1', 'p3') })), rj('p2', rep())]);
  t.same(one.members, ['p1', 'p3', 'p2'], 'one reporter of the newer ring is not enough to leave p2 out: it stays, after the ring');
  t.same(one.excluded, []);
});

t.test('planRebuild and checks: forged reports (epoch 2^53-1, far ahead, a one-member ring) decide nothing', async (t) => {
  t.match(checkReport(rj('p1', rep({ epoch: 2 ** 53 - 1 }))), /beyond any run/);
  t.match(checkReport(rj('p1', rep({ epoch: MAX_EPOCH + 1 }))), /beyond any run/);
  const others = [rj('p2', rep()), rj('p3', rep())];
  t.match(checkAgainstReports(rj('p1', rep({ epoch: 3 + MAX_EPOCH_LEAD + 1 })), others), /report at most 3: an epoch that far ahead is refused/);
  t.equal(checkAgainstReports(rj('p1', rep({ epoch: 4, ring: ring('p1', 'p2') })), others), undefined, 'one epoch ahead: a crash during a re-form');
  // The forger reports first (nothing to compare with yet): the plan leaves it out.
  const far = planRebuild([rj('p1', rep({ epoch: 1000, ring: ring('p1') })), ...others]);
  t.equal(far.fromEpoch, 3);
  t.same(far.members, ['p2', 'p3']);
  t.match(far.excluded, [{ peer: 'p1', reason: /claims epoch 1000, far ahead/ }]);
  // epoch + 1 and a ring of itself: the others stay members.
  const self = planRebuild([rj('p1', rep({ epoch: 4, ring: ring('p1') })), ...others]);
  t.same(self.members, ['p1', 'p2', 'p3'], 'nobody evicted');
  t.same(self.excluded, []);
  t.equal(allReported(new Map([['p1', rj('p1', rep({ epoch: 4, ring: ring('p1') }))]])), false, 'a one-member ring alone waits for the window');
  const m = new Map([['p1', rj('p1', rep({ epoch: 4, ring: ring('p1') }))], ['p2', rj('p2', rep())]]);
  t.equal(allReported(m), false, 'p3, named by p2, may still report');
});

t.test('planRebuild: ids minted by one token holder neither witness nor lead the rebuilt ring', async (t) => {
  // Review of issue 21: two made-up peers reporting a newer ring of their own evicted the three real members.
  const honest = ['p1', 'p2', 'p3'].map((p) => rj(p, rep({ epoch: 10 })));
  const forged = ['p98', 'p99'].map((p) => rj(p, rep({ epoch: 14, ring: ring('p98', 'p99') })));
  for (const order of [[...honest, ...forged], [...forged, ...honest]]) {
    const plan = planRebuild(order);
    t.same(plan.members, ['p1', 'p2', 'p3'], 'the real reporters agree on their ring');
    t.equal(plan.fromEpoch, 10);
    t.same(plan.excluded.map((x) => x.peer).sort(), ['p98', 'p99'], 'a ring no one else names, with fewer reporters, is refused');
  }
  // Minted ids that claim to be in the real ring: they may join it, never evict those that report it.
  const inside = planRebuild([...honest, ...['p98', 'p99'].map((p) => rj(p, rep({ epoch: 12, ring: ring('p1', 'p98', 'p99') })))]);
  t.same(inside.excluded, [], 'witnesses against p2 and p3 must come from their own ring');
  t.ok(['p1', 'p2', 'p3'].every((p) => inside.members.includes(p)), 'every real member stays');
  // The epoch lead is measured against reporters outside the suspect ring (the minted ones cannot vouch for it).
  t.match(checkAgainstReports(rj('p99', rep({ epoch: 10 + MAX_EPOCH_LEAD + 1, ring: ring('p98', 'p99') })), [...honest, rj('p98', rep({ epoch: 15, ring: ring('p98', 'p99') }))]),
    /report at most 10/);
});

t.test('reports naming peer ids past the id format, or far above the others, are refused', async (t) => {
  // Review of issue 21: the master numbered its next peers above any reported id, without bound.
  t.match(checkReport(rj('p1', rep({ ring: ring('p1', 'p2', 'p1234567890123456') }))), /reports peer id "p1234567890123456", not one this run could have given/);
  t.match(checkReport(rj('p1', rep({ ring: ring('p1', `p${2 ** 32 + 1}`) }))), /not one this run could have given/);
  t.equal(checkReport(rj('p1', rep())), undefined);
  const others = [rj('p2', rep()), rj('p3', rep())];
  t.match(checkAgainstReports(rj('p1', rep({ ring: ring('p1', 'p2', 'p3', 'p999999') })), others), /peer p999999, but the other members of group 0 name none above p3/);
  t.equal(checkAgainstReports(rj('p1', rep({ epoch: 4, ring: ring('p1', 'p2', 'p3', 'p9') })), others), undefined, 'a peer accepted just before the crash');
  const s = new Sim();
  const bad = rj('p1', rep({ ring: ring('p1', 'p999999999999999') }));
  t.ok(s.core.checkRejoin(bad), 'the coordinator refuses it before it raises its peer numbers');
});

t.test('coordinator: a forged one-member ring reported last does not evict the others', async (t) => {
  const sim = new Sim({ resumeWindowMs: 2000 });
  sim.rejoin('p2', rep());
  sim.rejoin('p3', rep());
  t.match(sim.rejoin('p1', rep({ epoch: 1 << 20, ring: ring('p1') })), /far ahead is refused/, 'an epoch far ahead is refused at once');
  t.equal(sim.rejoin('p1', rep({ epoch: 4, ring: ring('p1') })), undefined);
  t.same(sim.core.groupsInfo()[0], { peerGroup: 0, epoch: 5, members: ['p1', 'p2', 'p3'], pending: [] }, 'everyone is in the rebuilt ring');
});

t.test('planRebuild: a commit some members saw goes to the members of that epoch', async (t) => {
  const plan = planRebuild([rj('p1', rep({ committed: ['0.4'] })), rj('p2', rep()), rj('p3', rep({ epoch: 2, ring: ring('p1', 'p2', 'p3') }))]);
  t.same(plan.commits, [{ to: 'p1', key: '0.4' }, { to: 'p2', key: '0.4' }], 'p3 is of an older epoch: the commit is not its');
});

t.test('planRebuild: shared state (revision rule, a sync committed on some, a sync to restart)', async (t) => {
  const L = '0123456789abcdef';
  const committedOnOne = planRebuild([
    rj('p1', rep({ lastSync: 5, committedSync: 5, committedRevision: 9, states: [{ layout: L, revision: 9 }] })),
    rj('p2', rep({ lastSync: 5, committedSync: 4, committedRevision: 8, sync: { id: 5, attempt: 0 }, states: [{ layout: L, revision: 8 }] })),
    rj('p3', rep({ lastSync: 5, committedSync: 4, committedRevision: 8, sync: { id: 5, attempt: 0 }, states: [{ layout: L, revision: 8 }] })),
  ]);
  t.same(committedOnOne.stateCommit, { to: ['p2', 'p3'], sync: 5, revision: 9 }, 'the others get the commit p1 saw');
  t.equal(committedOnOne.sync.inProgress, undefined);
  t.same(committedOnOne.sync.states.get(L), { revision: 9, peers: ['p1'] });
  const restart = planRebuild([
    rj('p1', rep({ lastSync: 5, committedSync: 4, sync: { id: 5, attempt: 1 } })),
    rj('p2', rep({ lastSync: 4, committedSync: 4, sync: { id: 0, attempt: 0 } })),
  ]);
  t.same(restart.sync.inProgress, { id: 5, attempt: 1 }, 'nobody saw the commit: the sync restarts above every attempt');
  t.equal(restart.sync.seq, 5);
  const unnumbered = planRebuild([rj('p1', rep({ lastSync: 4, committedSync: 4, sync: { id: 0, attempt: 0 } }))]);
  t.same(unnumbered.sync.inProgress, { id: 5, attempt: 0 }, 'a sync the old master had not numbered gets a new number');
});

t.test('checkReport and allReported', async (t) => {
  t.match(checkReport(rj('p9', rep())), /not in that ring/);
  t.match(checkReport(rj('p1', rep({ epoch: 0 }))), /member at epoch 0/);
  t.equal(checkReport(rj('p1', rep())), undefined);
  const m = new Map([['p1', rj('p1', rep())], ['p2', rj('p2', rep())]]);
  t.equal(allReported(m), false);
  m.set('p3', rj('p3', rep()));
  t.equal(allReported(m), true);
});

t.test('coordinator: a fresh master rebuilds a group above every reported epoch once every member reported', async (t) => {
  const sim = new Sim({ resumeWindowMs: 2000 });
  t.equal(sim.rejoin('p2', rep({ epoch: 7 })), undefined);
  t.equal(sim.rejoin('p1', rep({ epoch: 7, committed: ['0.1'] })), undefined);
  t.same(sim.core.groupsInfo(), [], 'not yet: p3 may still come');
  sim.say('p1', { t: 'vote', id: 3 }); // said again after the reconnect: kept for the rebuilt group
  t.equal(sim.rejoin('p3', rep({ epoch: 6, ring: ring('p1', 'p2', 'p3') })), undefined);
  t.same(sim.core.groupsInfo()[0], { peerGroup: 0, epoch: 8, members: ['p1', 'p2', 'p3'], pending: [] });
  t.same(sim.kinds('p1').slice(0, 2), ['opCommit', 'ring'], 'the commit p1 saw goes out before the new ring');
  t.same(sim.kinds('p3'), ['ring'], 'p3 was of an older epoch');
  const id = sim.join();
  t.equal(id, 'p4', 'new ids start above every reported one');
});

t.test('coordinator: the resume window ends; a member that died is missing; a late one is taken back', async (t) => {
  const sim = new Sim({ resumeWindowMs: 2000 });
  sim.rejoin('p1', rep());
  sim.rejoin('p2', rep());
  sim.advance(1999);
  t.same(sim.core.groupsInfo(), []);
  sim.advance(1);
  t.same(sim.core.groupsInfo()[0].members, ['p1', 'p2'], 'p3 did not report in time');
  t.equal(sim.epoch(), 4);
  sim.ack('p1', 'p2');
  t.match(sim.rejoin('p3', rep({ epoch: 4 })), /epoch from the future/);
  t.equal(sim.rejoin('p3', rep()), undefined, 'a late member of an older epoch');
  t.same(sim.core.groupsInfo()[0].members, ['p1', 'p2', 'p3']);
  t.equal(sim.epoch(), 5);
  t.match(sim.rejoin('p3', rep()), /already connected/);
});

t.test('coordinator: a brand-new peer that joins during a rebuild waits as pending', async (t) => {
  const sim = new Sim({ resumeWindowMs: 2000 });
  sim.rejoin('p1', rep({ ring: ring('p1', 'p2') }));
  const n = sim.join();
  sim.rejoin('p2', rep({ ring: ring('p1', 'p2') }));
  t.same(sim.core.groupsInfo()[0].pending, [n]);
});

t.test('a barrier vote whose result the crash cut off for one member: its vote said again is answered at once', async (t) => {
  t.same(planRebuild([rj('p1', rep({ votes: 5 })), rj('p2', rep({ votes: 4 })), rj('p3', rep({ votes: 5 }))]).voteCatchUp, ['p2']);
  t.same(planRebuild([rj('p1', rep({ epoch: 4, ring: ring('p1', 'p2'), votes: 2 })), rj('p2', rep({ epoch: 3, ring: ring('p1', 'p2'), votes: 0 }))]).voteCatchUp, [],
    'counts of different epochs are not compared');
  const sim = new Sim({ resumeWindowMs: 2000 });
  sim.rejoin('p1', rep({ votes: 3 }));
  sim.rejoin('p2', rep({ votes: 2 }));
  sim.say('p2', { t: 'vote', id: 9 }); // p2 says its vote again; p1 and p3 have moved on
  sim.rejoin('p3', rep({ votes: 3 }));
  const r = sim.take('p2', 'voteResult');
  t.same(r.map((m) => [m.id, m.ok, m.accepted]), [[9, true, 0]], 'p2 is answered without the others voting again');
  sim.ack('p1', 'p2', 'p3');
  sim.say('p1', { t: 'vote', id: 4 });
  t.same(sim.take('p1', 'voteResult'), [], 'the next vote is a barrier of everyone again');
  sim.say('p2', { t: 'vote', id: 10 });
  sim.say('p3', { t: 'vote', id: 4 });
  t.equal(sim.take('p1', 'voteResult').length, 1);
});
