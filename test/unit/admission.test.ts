// Admission without ceremony, the master's half (lib/master/admission.ts) driven in-process: one commit per
// round announces the vote, only when every member is 'auto', said again to a reconnecting member.
import t from 'tap';
import { Sim } from '../helpers/coordinator-sim';

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
