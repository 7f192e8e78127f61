// Admission without ceremony in-process: the master's half (lib/master/admission.ts: one commit per round
// announces the vote, only when every member is 'auto', said again to a reconnecting member) and the peer's
// (lib/peer/admission.ts: one vote per announcement, before the next operation).
import t from 'tap';
import { Sim } from '../helpers/coordinator-sim';
import { Admission } from '../../lib/peer/admission';
import { Membership } from '../../lib/peer/membership';
import { Logger } from '../../lib/log';
import { PeerMsg, emptyPeerStats } from '../../lib/protocol';
import type { DataPlane } from '../../lib/collective';

function commitAll(s: Sim, peers: string[], key: string) {
  const e = s.epoch();
  for (const p of peers) s.say(p, { t: 'done', epoch: e, key });
  return peers.map((p) => s.take(p, 'opCommit'));
}

t.test('a commit announces the admission vote once per round when every member is auto', async (t) => {
  const s = new Sim();
  const [a, b] = s.group(2, 0, true);
  t.same(commitAll(s, [a, b], '0.0').flat().map((m) => m.admit), [undefined, undefined], 'nobody pending: no announcement');
  const c = s.join(0, 4005, true);
  const first = commitAll(s, [a, b], '0.1');
  t.same(first.flat().map((m) => m.admit), [true, true], 'every member gets the same announcing commit');
  t.same(commitAll(s, [a, b], '0.2').flat().map((m) => m.admit), [undefined, undefined], 'one announcement per round');
  s.lose(a); // a re-form before the vote: the round stays announced (b still owes its vote)
  s.ack(b);
  t.same(commitAll(s, [b], '0.0').flat().map((m) => m.admit), [undefined]);
  s.say(b, { t: 'vote', id: 7 });
  s.ack(b, c);
  t.same(s.take(b, 'voteResult').map((v) => v.accepted), [1], 'the vote accepted the pending peer');
  const d = s.join(0, 4006, true);
  t.same(commitAll(s, [b, c], '0.0').flat().map((m) => m.admit), [true, true], 'a new pending peer is a new round');
  s.say(b, { t: 'vote', id: 8 });
  s.say(c, { t: 'vote', id: 1 });
  s.ack(b, c, d);
  t.same(s.core.groupsInfo()[0].members.length, 3);
});

t.test('no announcement while a member is manual; a reconnecting member hears it again', async (t) => {
  const s = new Sim();
  const a = s.join(0, 4000, true);
  s.ack(a);
  const b = s.join(0, 4001, false);
  s.say(a, { t: 'vote', id: 1 });
  s.ack(a, b);
  s.take(a, 'voteResult');
  s.join(0, 4002, true);
  t.same(commitAll(s, [a, b], '0.0').flat().map((m) => m.admit), [undefined, undefined], 'b is manual: updateTopology is how it admits');

  const s2 = new Sim();
  const [x, y] = s2.group(2, 0, true);
  s2.join(0, 4005, true);
  commitAll(s2, [x, y], '0.0');
  s2.resume(x);
  t.same(s2.take(x, 'opCommit').map((m) => m.admit), [true], 'the resent commit still announces');
});

t.test('the last member leaving before the vote: the pending peer forms the group and a later newcomer is announced', async (t) => {
  const s = new Sim();
  const [a] = s.group(1, 0, true);
  const b = s.join(0, 4001, true);
  t.same(commitAll(s, [a], '0.0').flat().map((m) => m.admit), [true], 'b pending: announced');
  s.lose(a); // a leaves before it votes: b becomes the group
  s.ack(b);
  t.same(s.core.groupsInfo()[0].members.length, 1);
  const c = s.join(0, 4002, true);
  t.same(commitAll(s, [b], '0.0').flat().map((m) => m.admit), [true], 'c is announced to b');
  s.say(b, { t: 'vote', id: 1 });
  s.ack(b, c);
  t.same(s.core.groupsInfo()[0].members.length, 2, 'c admitted');
});

t.test('a vote that times out is announced again at the next commit', async (t) => {
  const s = new Sim();
  const [a, b] = s.group(2, 0, true);
  const c = s.join(0, 4005, true);
  t.same(commitAll(s, [a, b], '0.0').flat().map((m) => m.admit), [true, true]);
  s.say(a, { t: 'vote', id: 1 }); // b's next operation comes later than the vote timeout
  s.advance(6000);
  t.same(s.take(a, 'voteResult').map((v) => v.code), ['TIMEOUT']);
  t.same(commitAll(s, [a, b], '0.1').flat().map((m) => m.admit), [true, true], 'announced again');
  s.say(a, { t: 'vote', id: 2 });
  s.say(b, { t: 'vote', id: 1 });
  s.ack(a, b, c);
  t.same(s.core.groupsInfo()[0].members.length, 3, 'c admitted');
});

// The peer's half (lib/peer/admission.ts) with the master's messages played by the test.

function peer(auto: boolean) {
  const sent: PeerMsg[] = [];
  const log = new Logger('test', 'silent');
  const plane = { port: 1, configure: () => undefined } as unknown as DataPlane;
  const ctx = { peerGroup: 0, dataPlane: plane, log: () => log, send: (m: PeerMsg) => sent.push(m), stats: emptyPeerStats(), failure: () => undefined };
  const membership = new Membership({ ...ctx, reconnecting: () => false, masterAddress: () => 'master:1', controlBehind: () => false, controlCaughtUp: async () => undefined });
  const admission = new Admission({ ...ctx, membership, auto, warnAloneMs: 0 });
  membership.onMessage({ t: 'ring', epoch: 1, index: 0, peers: [{ id: 'p1@h:1', host: 'h', port: 1 }, { id: 'p2@h:2', host: 'h', port: 2 }], ticket: new Uint8Array(16), reason: 'test' });
  membership.onMessage({ t: 'ready', epoch: 1 });
  const votes = () => sent.filter((m) => m.t === 'vote');
  return { sent, membership, admission, votes };
}

t.test('peer: one vote per announcement, before the next operation; an updateTopology is that vote', async (t) => {
  const { membership, admission, votes } = peer(true);
  await admission.beforeOp();
  t.equal(votes().length, 0, 'nothing announced: no vote');
  const commit = { t: 'opCommit' as const, epoch: 1, key: '0.3', admit: true };
  admission.onCommit(commit);
  admission.onCommit(commit); // said again after a reconnect
  const op1 = admission.beforeOp();
  const op2 = admission.beforeOp(); // a second operation started at once waits for the same vote
  t.equal(votes().length, 1, 'one vote, however many operations start');
  const id = (votes()[0] as { id: number }).id;
  membership.onMessage({ t: 'voteResult', id, ok: true, epoch: 1, accepted: 0 });
  await Promise.all([op1, op2]);
  await admission.beforeOp();
  t.equal(votes().length, 1, 'the next operations do not vote again');
  admission.onCommit({ ...commit, key: '0.4' });
  admission.takeVote(); // the caller's own updateTopology() casts it
  await admission.beforeOp();
  t.equal(votes().length, 1, 'an updateTopology call replaces the library\'s vote');
});

t.test('peer: a manual communicator ignores announcements', async (t) => {
  const { admission, votes } = peer(false);
  admission.onCommit({ t: 'opCommit', epoch: 1, key: '0.0', admit: true });
  await admission.beforeOp();
  t.equal(votes().length, 0);
});

t.test('peer: an automatic vote that times out never fails the operation; the next announcement votes again', async (t) => {
  const { membership, admission, votes } = peer(true);
  admission.onCommit({ t: 'opCommit', epoch: 1, key: '0.1', admit: true });
  const op = admission.beforeOp();
  const id = (votes()[0] as { id: number }).id;
  membership.onMessage({ t: 'voteResult', id, ok: false, epoch: 1, accepted: 0, code: 'TIMEOUT', message: 'updateTopology timed out after 60000 ms: p2 did not vote' });
  await t.resolves(op, 'the operation goes on');
  await admission.beforeOp();
  t.equal(votes().length, 1, 'no vote until the master announces again');
  admission.onCommit({ t: 'opCommit', epoch: 1, key: '0.2', admit: true });
  const op2 = admission.beforeOp();
  t.equal(votes().length, 2, 'the re-announced round gets its vote');
  membership.onMessage({ t: 'voteResult', id: (votes()[1] as { id: number }).id, ok: true, epoch: 1, accepted: 0 });
  await op2;
});
