// The master's state machine without sockets or timers: joins, votes, commits, drops at every awkward moment,
// shared-state syncs interrupted by a loss, two groups, frozen peers and stale messages, on a fake clock.
import t from 'tap';
import { Sim, report } from '../helpers/coordinator-sim';

const H1 = '1111111111111111';
const H2 = '2222222222222222';

t.test('joins: the first peer forms the group, later ones wait for a vote, a vote with nobody pending is a barrier', async (t) => {
  const s = new Sim();
  const a = s.join();
  const [ring] = s.take(a, 'ring');
  t.match(ring, { epoch: 1, index: 0, reason: /p1 started the group/ });
  t.equal(ring.peers.length, 1);
  t.same(s.kinds(a), [], 'nothing else before the ack');
  s.say(a, { t: 'ack', epoch: 1 });
  t.same(s.take(a, 'ready'), [{ t: 'ready', epoch: 1 }], 'ready once every member acknowledged');

  const b = s.join(0, 4001);
  t.same(s.kinds(b), [], 'a newcomer gets no ring while it waits');
  t.equal(s.world(a)?.pending, 1, 'the members see a peer waiting');
  t.same(s.core.groupsInfo(), [{ peerGroup: 0, epoch: 1, members: [a], pending: [b] }]);

  s.say(a, { t: 'vote', id: 7 });
  t.same(s.kinds(a), ['ring'], 'the vote passes: a new ring, the vote result only once it is installed');
  const [rb] = s.take(b, 'ring');
  t.match(rb, { epoch: 2, index: 1 });
  t.same(rb.peers.map((p) => p.id.split('@')[0]), [a, b], 'ring order is join order');
  s.ack(a);
  t.same(s.kinds(a), [], 'one member acknowledged: still waiting');
  s.ack(b);
  t.same(s.take(a, 'ready'), [{ t: 'ready', epoch: 2 }]);
  t.same(s.take(b, 'ready'), [{ t: 'ready', epoch: 2 }]);
  t.same(s.take(a, 'voteResult'), [{ t: 'voteResult', id: 7, ok: true, epoch: 2, accepted: 1 }]);
  t.equal(s.world(b)?.groupWorldSize, 2);

  s.say(a, { t: 'vote', id: 8 });
  t.same(s.kinds(a), [], 'a barrier waits for every member');
  s.say(b, { t: 'vote', id: 1 });
  t.same(s.take(a, 'voteResult'), [{ t: 'voteResult', id: 8, ok: true, epoch: 2, accepted: 0 }]);
  t.same(s.take(b, 'voteResult'), [{ t: 'voteResult', id: 1, ok: true, epoch: 2, accepted: 0 }]);
  t.same(s.kinds(a), [], 'no re-form without a newcomer');
  t.equal(s.core.feed.counters.peersAccepted, 2);
});

t.test('a peer killed during a vote: the survivors are told at once, and the vote completes without waiting for a deadline', async (t) => {
  const s = new Sim();
  const [a, b, c] = s.group(3);
  const e = s.epoch();
  // a and b finished an operation (waiting for its commit) and voted; c dies before doing either.
  s.say(a, { t: 'done', epoch: e, key: '0.4' });
  s.say(b, { t: 'done', epoch: e, key: '0.4' });
  s.say(a, { t: 'vote', id: 1 });
  s.say(b, { t: 'vote', id: 1 });
  s.lose(c);
  t.match(s.dropped.get(c), /control connection closed/);
  for (const p of [a, b]) {
    const rings = s.take(p, 'ring');
    t.equal(rings.length, 1, `${p} gets the new ring in the same step as the loss (no clock involved)`);
    t.equal(rings[0].epoch, e + 1, 'of the next epoch: installing it fails the operation of the old one at once');
    t.match(rings[0].reason, new RegExp(`${c} dropped`));
  }
  t.equal(s.core.feed.counters.opsSuperseded, 1, 'the operation in flight is counted as superseded');
  s.ack(a, b);
  for (const p of [a, b]) {
    t.same(s.take(p, 'ready'), [{ t: 'ready', epoch: e + 1 }]);
    t.same(s.take(p, 'voteResult'), [{ t: 'voteResult', id: 1, ok: true, epoch: e + 1, accepted: 0 }], `${p}'s vote completes as soon as the ring is installed`);
  }
  s.say(a, { t: 'done', epoch: e, key: '0.4' });
  s.say(b, { t: 'done', epoch: e, key: '0.4' });
  t.same(s.kinds(a), [], 'reports of the old epoch commit nothing');
});

t.test('a peer killed during a vote that accepts a newcomer, before it installed the new ring', async (t) => {
  const s = new Sim();
  const [a, b, c] = s.group(3);
  const e = s.epoch();
  const d = s.join(0, 4100);
  for (const p of [a, b, c]) s.say(p, { t: 'vote', id: 3 });
  for (const p of [a, b, c, d]) t.equal(s.take(p, 'ring')[0]?.epoch, e + 1, `${p} gets the ring with the newcomer`);
  s.say(a, { t: 'ack', epoch: e + 1 });
  s.say(b, { t: 'ack', epoch: e + 1 });
  s.say(d, { t: 'ack', epoch: e + 1 });
  s.lose(c);
  for (const p of [a, b, d]) {
    const [r] = s.take(p, 'ring');
    t.equal(r.epoch, e + 2, `${p}: the ring without c follows at once`);
    t.same(r.peers.map((q) => q.id.split('@')[0]), [a, b, d]);
  }
  t.same(s.kinds(a), [], 'no ready for the epoch that never completed');
  s.ack(a, b, d);
  for (const p of [a, b]) t.same(s.take(p, 'voteResult'), [{ t: 'voteResult', id: 3, ok: true, epoch: e + 2, accepted: 1 }]);
  t.same(s.take(d, 'ready'), [{ t: 'ready', epoch: e + 2 }], 'the newcomer is ready with the survivors');
  t.equal(s.core.nextDeadline(), undefined, 'nothing is left waiting on the clock');
});

t.test('operation commits: all done, one failure aborts it everywhere, a loss supersedes it', async (t) => {
  const s = new Sim();
  const [a, b, c] = s.group(3);
  const e = s.epoch();
  s.say(a, { t: 'done', epoch: e, key: '5.0' });
  s.say(b, { t: 'done', epoch: e, key: '5.0' });
  t.same(s.kinds(a), [], 'no commit before every member is done');
  s.say(c, { t: 'done', epoch: e, key: '5.0' });
  for (const p of [a, b, c]) t.same(s.take(p, 'opCommit'), [{ t: 'opCommit', epoch: e, key: '5.0' }]);
  s.say(c, { t: 'done', epoch: e, key: '5.0' });
  t.same(s.kinds(c), [], 'a repeated report is ignored');

  s.say(a, { t: 'done', epoch: e, key: '6.0' });
  s.say(b, { t: 'fail', epoch: e, key: '6.0', code: 'MISMATCH', message: 'counts differ' });
  for (const p of [a, b, c]) {
    t.match(s.take(p, 'opAbort'), [{ epoch: e, key: '6.0', code: 'MISMATCH', message: `counts differ (on ${b})` }], `${p} is told the operation failed`);
  }
  s.say(c, { t: 'done', epoch: e, key: '6.0' });
  t.match(s.take(c, 'opAbort'), [{ key: '6.0', code: 'MISMATCH' }], 'a late report of an aborted operation is answered with the abort');
  t.equal(s.core.feed.counters.opsCommitted, 1);
  t.equal(s.core.feed.counters.opsAborted, 1);

  // A loss while an operation waits for its commit: the survivors learn it from the new ring.
  s.say(a, { t: 'done', epoch: e, key: '7.0' });
  s.say(b, { t: 'done', epoch: e, key: '7.0' });
  s.lose(c, 'no heartbeat for 3000 ms');
  t.equal(s.take(a, 'ring')[0].epoch, e + 1);
  t.equal(s.take(b, 'ring')[0].epoch, e + 1);
  t.same(s.kinds(a), [], 'no commit and no abort: the ring itself ends the operation');
});

t.test('a source lost during a shared-state transfer: the survivors report again and the sync commits without it', async (t) => {
  const s = new Sim();
  const [a, b, c] = s.group(3);
  const e = s.epoch();
  s.say(a, report(0, 1, { w: H1 }));
  s.say(b, report(0, 1, { w: H1 }));
  t.same(s.kinds(a), [], 'the election waits for every member');
  s.say(c, report(0, 0, { w: H2 }, 'receiveOnly'));
  const [d0] = s.take(c, 'stateDecision');
  t.match(d0, { attempt: 0, epoch: e });
  t.same(d0.decision.sources, [a, b], 'two sources');
  t.same(d0.decision.outdated, { [c]: ['w'] });
  s.take(a, 'stateDecision');
  s.take(b, 'stateDecision');
  s.say(a, { t: 'stateDone', sync: 1, attempt: 0, ok: true });
  s.lose(b, 'control connection closed'); // killed mid-transfer
  t.equal(s.take(a, 'ring')[0]?.epoch, e + 1);
  t.equal(s.take(c, 'ring')[0]?.epoch, e + 1);
  t.same(s.kinds(c), [], 'no retry before the new ring is installed');
  s.say(a, { t: 'ack', epoch: e + 1 });
  s.say(c, { t: 'ack', epoch: e + 1 });
  for (const p of [a, c]) t.match(s.take(p, 'stateRetry'), [{ sync: 1, attempt: 1, reason: /re-formed/ }], `${p} is asked for a fresh report`);
  s.say(a, report(1, 1, { w: H1 }));
  s.say(c, report(1, 0, { w: H2 }, 'receiveOnly'));
  const [d1] = s.take(c, 'stateDecision');
  t.match(d1, { sync: 1, attempt: 1, epoch: e + 1 });
  t.same(d1.decision.sources, [a], 'the survivor is the only source');
  t.not(d1.tag, d0.tag, 'a fresh tag range for the new attempt');
  s.say(a, { t: 'stateDone', sync: 1, attempt: 1, ok: true });
  s.say(c, { t: 'stateDone', sync: 1, attempt: 1, ok: true });
  for (const p of [a, c]) t.same(s.take(p, 'stateCommit'), [{ t: 'stateCommit', sync: 1, revision: 1 }]);
  t.equal(s.core.feed.counters.syncRetries, 1);
  t.equal(s.core.feed.counters.syncsCommitted, 1);
});

t.test('a sync waits for every member and fails at its deadline naming who did not call it', async (t) => {
  const s = new Sim({ voteTimeoutMs: 2000 });
  const [a, b] = s.group(2);
  s.say(a, report(0, 1, { w: H1 }));
  s.advance(1999);
  t.same(s.kinds(a), []);
  s.advance(1);
  t.match(s.take(a, 'stateFail'), [{ sync: 1, code: 'TIMEOUT', message: new RegExp(`${b} did not call it`) }]);
  t.equal(s.core.feed.counters.syncsFailed, 1);
});

t.test('two groups are independent; a group without peers disappears', async (t) => {
  const s = new Sim();
  const [a0, b0] = s.group(2, 0);
  const [a7, b7] = s.group(2, 7);
  t.match(s.world(a0), { worldSize: 4, groupWorldSize: 2, peerGroups: 2, pending: 0 });
  s.say(a7, { t: 'vote', id: 1 });
  s.say(b7, { t: 'vote', id: 1 });
  t.equal(s.take(a7, 'voteResult').length, 1, 'group 7 votes among its own members');
  s.say(a0, { t: 'done', epoch: s.epoch(0), key: '1.0' });
  s.say(a7, { t: 'done', epoch: s.epoch(7), key: '1.0' });
  s.say(b7, { t: 'done', epoch: s.epoch(7), key: '1.0' });
  t.equal(s.take(a7, 'opCommit').length, 1, 'an operation of group 7 commits without group 0');
  t.same(s.kinds(a0), [], 'group 0 is not involved');
  s.lose(b7);
  t.equal(s.take(a7, 'ring').length, 1, 'group 7 re-forms');
  t.same(s.kinds(a0), [], 'group 0 does not');
  t.match(s.world(b0), { worldSize: 3, groupWorldSize: 2, peerGroups: 2 });
  s.lose(a7);
  t.same(s.core.groupsInfo().map((g) => g.peerGroup), [0], 'the empty group is gone');
  t.match(s.world(a0), { worldSize: 2, peerGroups: 1 });
});

t.test('frozen peers: one that never installs a ring is dropped at its deadline, one that never votes fails the vote', async (t) => {
  const s = new Sim({ ackTimeoutMs: 1000, voteTimeoutMs: 5000 });
  const [a, b, c] = s.group(3);
  const e = s.epoch();
  const d = s.join(0, 4100);
  for (const p of [a, b, c]) s.say(p, { t: 'vote', id: 1 });
  s.ack(a, b, d);
  s.take(c, 'ring'); // c is frozen: it never answers
  s.advance(999);
  t.notOk(s.dropped.has(c), 'not before its deadline');
  s.advance(1);
  t.match(s.dropped.get(c), new RegExp(`did not install epoch ${e + 1} within 1000 ms`));
  t.equal(s.take(a, 'ring')[0]?.epoch, e + 2, 'the others re-form without it');
  s.ack(a, b, d);
  t.equal(s.take(a, 'voteResult')[0]?.epoch, e + 2);
  t.same(s.take(a, 'ready'), [{ t: 'ready', epoch: e + 2 }]);

  s.say(a, { t: 'vote', id: 2 });
  s.say(b, { t: 'vote', id: 2 });
  s.advance(4999);
  t.same(s.kinds(a), [], 'the vote waits until its deadline');
  s.advance(1);
  t.match(s.take(a, 'voteResult'), [{ id: 2, ok: false, code: 'TIMEOUT', message: new RegExp(`${d} did not vote`) }]);
  t.equal(s.core.feed.counters.votesTimedOut, 1);
});

t.test('a busy member (its JavaScript thread blocked, its heartbeats going on) is waited for, up to jsHangTimeoutMs', async (t) => {
  const s = new Sim({ ackTimeoutMs: 1000, jsHangTimeoutMs: 20_000, voteTimeoutMs: 60_000 });
  const [a, b, c] = s.group(3);
  const e = s.epoch();
  s.busy(c, 500);
  s.lose(b); // a re-form c cannot install while it is busy
  s.ack(a);
  s.take(c, 'ring');
  for (let ms = 0; ms < 10_000; ms += 500) {
    s.advance(500);
    s.busy(c, 1000 + ms);
  }
  t.notOk(s.dropped.has(c), 'not dropped for a missing ack while its heartbeats say it is busy');
  t.same(s.take(a, 'ready'), [], 'the group waits for it');
  s.busy(c, 0);
  s.say(c, { t: 'ack', epoch: e + 1 });
  t.same(s.take(a, 'ready'), [{ t: 'ready', epoch: e + 1 }], 'ready once it is free and has installed the ring');
  t.same(s.core.groupsInfo()[0].members, [a, c]);

  // A new busy period starts from zero, and past jsHangTimeoutMs (the master's clock) the peer is hung.
  s.busy(c, 300);
  for (let ms = 0; ms < 19_000; ms += 500) {
    s.advance(500);
    s.busy(c, 800 + ms);
  }
  t.notOk(s.dropped.has(c), 'not before jsHangTimeoutMs');
  s.advance(500);
  s.busy(c, 20_300);
  t.match(s.dropped.get(c), /^JavaScript thread blocked for 20300 ms \(jsHangTimeoutMs 20000\)/);
  t.equal(s.take(a, 'ring').at(-1)?.epoch, e + 2, 'the others re-form without it');
});

t.test('a ring install waits on a busy member for at most voteTimeoutMs, not jsHangTimeoutMs', async (t) => {
  // Review of issue 21: heartbeats that keep saying "busy" stretched every re-form for up to jsHangTimeoutMs.
  const s = new Sim({ ackTimeoutMs: 1000, jsHangTimeoutMs: 300_000, voteTimeoutMs: 5000 });
  const [a, b, c] = s.group(3);
  const e = s.epoch();
  s.busy(c, 500);
  s.lose(b);
  s.ack(a);
  for (let ms = 0; ms < 4500; ms += 500) {
    s.advance(500);
    s.busy(c, 1000 + ms);
  }
  t.notOk(s.dropped.has(c), 'waited for while under voteTimeoutMs');
  s.advance(500);
  s.busy(c, 5500);
  s.advance(100);
  t.match(s.dropped.get(c), new RegExp(`did not install epoch ${e + 1} within 5000 ms \\(voteTimeoutMs\\): its JavaScript thread stayed busy`));
  t.same(s.core.groupsInfo()[0].members, [a], 'the others go on without it');
});

t.test('a member that stops saying it is busy has the peer timeout to acknowledge, as any other', async (t) => {
  const s = new Sim({ ackTimeoutMs: 1000, jsHangTimeoutMs: 20_000 });
  const [a, b, c] = s.group(3);
  const e = s.epoch();
  s.busy(c, 600);
  s.lose(b);
  s.ack(a);
  s.advance(900);
  s.busy(c, 1500);
  s.advance(900);
  t.notOk(s.dropped.has(c), 'spared at the deadline: it said it is busy');
  s.busy(c, 0); // free again, yet it does not acknowledge: dropped a peer timeout after its last busy report
  s.advance(99);
  t.notOk(s.dropped.has(c));
  s.advance(1);
  t.match(s.dropped.get(c), new RegExp(`did not install epoch ${e + 1} within 1000 ms`));
});

t.test('stale and out-of-place messages change nothing', async (t) => {
  const s = new Sim();
  const [a, b, c] = s.group(3);
  const e = s.epoch();
  const x = s.join(0, 4100);
  s.say(x, { t: 'vote', id: 9 });
  t.match(s.take(x, 'voteResult'), [{ id: 9, ok: false, code: 'NOT_MEMBER' }], 'a pending peer cannot vote');
  s.say(x, report(0, 0, { w: H1 }));
  t.match(s.take(x, 'stateFail'), [{ code: 'NOT_MEMBER' }], 'nor sync');
  s.say(x, { t: 'done', epoch: e, key: '0.0' });
  s.say(a, { t: 'lost', epoch: e - 1, peer: `${b}@127.0.0.1:4001`, message: 'old news' });
  s.say(a, { t: 'lost', epoch: e, peer: 'p99@127.0.0.1:1', message: 'not a member' });
  s.say(a, { t: 'fail', epoch: e - 1, key: '0.0', code: 'TIMEOUT', message: 'old' });
  s.say(a, { t: 'ack', epoch: e - 1 });
  s.say(b, { t: 'done', epoch: e - 1, key: '0.0' });
  t.same(s.dropped.size, 0, 'no loss report of another epoch drops anyone');
  for (const p of [a, b, c]) t.same(s.kinds(p), [], `${p} received nothing`);
  t.equal(s.epoch(), e, 'no re-form');
  // A loss reported in the current epoch drops the named peer.
  s.say(a, { t: 'lost', epoch: e, peer: `${c}@127.0.0.1:4002`, message: 'connection reset' });
  t.match(s.dropped.get(c), new RegExp(`reported lost by ${a}: connection reset`));
  // A dropped peer's later words are ignored.
  s.say(c, { t: 'vote', id: 1 });
  s.say(c, { t: 'fail', epoch: e + 1, key: '0.0', code: 'X', message: 'y' });
  t.same(s.kinds(a).filter((k) => k !== 'ring'), [], 'nothing from the dropped peer reaches the others');
});

t.test('the last member leaving hands the group to the pending peers; leaving is counted apart from being dropped', async (t) => {
  const s = new Sim();
  const a = s.join();
  s.ack(a);
  const b = s.join(0, 4001);
  s.say(a, { t: 'bye' });
  t.match(s.dropped.get(a), /left/);
  const [r] = s.take(b, 'ring');
  t.match(r, { epoch: 2, index: 0, reason: /no members left; accepting pending p2/ });
  t.equal(s.core.feed.counters.peersLeft, 1);
  t.equal(s.core.feed.counters.peersDropped, 0);
  t.ok(s.core.feed.recent().some((ev) => ev.what === 'peer left' && ev.fields.peer === a), 'the feed says who left');
});
