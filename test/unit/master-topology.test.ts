// The master's half of optimizeTopology on the state machine, without sockets: reports in, solve out, the new
// order installed by re-forming (result before ring), kept when the gain is small, a loss or a failed measurement
// ending the round, the timeout naming who did not report.
import t from 'tap';
import type { Msg } from '../../lib/protocol';
import { Sim } from '../helpers/coordinator-sim';

const MB = 1e6;

/** Links of peer `from` to every other: fast to peers of the same parity ("region"), slow to the others. */
function links(ids: string[], from: string, equal = false): Msg<'topoReport'>['links'] {
  const i = ids.indexOf(from);
  return ids.filter((x) => x !== from).map((to) => {
    const same = equal || ids.indexOf(to) % 2 === i % 2;
    return { to, bytesPerSec: same ? 125 * MB : 25 * MB, rttMs: same ? 10 : 80 };
  });
}

function report(epoch: number, l: Msg<'topoReport'>['links'], minGain = 0.1): Msg<'topoReport'> {
  return { t: 'topoReport', epoch, bytes: 64 << 20, minGain, links: l, measureMs: 900, measureBytes: 4 << 20 };
}

t.test('two regions joined alternately: the result first, then the new ring crossing twice, then ready', async (t) => {
  const s = new Sim();
  const ids = s.group(6);
  const epoch = s.epoch();
  for (const p of ids.slice(0, 5)) s.say(p, report(epoch, links(ids, p)));
  t.same(s.kinds(ids[0]), [], 'nothing until every member reported');
  s.say(ids[5], report(epoch, links(ids, ids[5])));
  for (const p of ids) t.same(s.kinds(p).slice(0, 2), ['topoResult', 'ring'], `${p}: result before the ring`);
  const [r] = s.take(ids[0], 'topoResult');
  t.match(r, { ok: true, applied: true, epoch: epoch + 1, oldOrder: ids });
  const regionOf = (id: string) => ids.indexOf(id) % 2;
  const order = r.newOrder;
  let crossings = 0;
  for (let k = 0; k < order.length; k++) if (regionOf(order[k]) !== regionOf(order[(k + 1) % order.length])) crossings++;
  t.equal(crossings, 2, `ring ${order.join(',')} crosses twice`);
  t.ok(r.predictedAfterMs < r.predictedBeforeMs / 2, `predicted ${r.predictedBeforeMs.toFixed(0)} -> ${r.predictedAfterMs.toFixed(0)} ms`);
  t.same(r.matrix!.peers, ids, 'the matrix in the old order');
  t.equal(r.matrix!.bandwidth[0][1], 25 * MB);
  t.same(s.core.groupsInfo()[0].members, order, 'the group is in the new order');
  s.ack(...ids);
  t.same(s.take(ids[3], 'ready'), [{ t: 'ready', epoch: epoch + 1 }]);
});

t.test('every order equal: answered at once, not applied, no re-form', async (t) => {
  const s = new Sim();
  const ids = s.group(4);
  const epoch = s.epoch();
  for (const p of ids) s.say(p, report(epoch, links(ids, p, true)));
  for (const p of ids) t.same(s.kinds(p), ['topoResult'], `${p}: only the result`);
  const [r] = s.take(ids[1], 'topoResult');
  t.match(r, { ok: true, applied: false, epoch, oldOrder: ids, newOrder: ids });
  t.equal(s.epoch(), epoch);
  for (const p of ids) s.take(p, 'topoResult');
  // A second call in the same epoch is a new round.
  for (const p of ids) s.say(p, report(epoch, links(ids, p, true)));
  t.same(s.kinds(ids[2]), ['topoResult'], 'the second call is answered too');
});

t.test('a gain below the members\' threshold is not applied', async (t) => {
  const s = new Sim();
  const ids = s.group(6);
  const epoch = s.epoch();
  for (const p of ids) s.say(p, report(epoch, links(ids, p), 0.99));
  const [r] = s.take(ids[0], 'topoResult');
  t.match(r, { ok: true, applied: false, newOrder: ids });
  t.ok(r.predictedBeforeMs > 0);
});

t.test('a peer lost before the decision: the round ends with the re-form, no result; reports of the old epoch are ignored', async (t) => {
  const s = new Sim();
  s.autoSolve = false;
  const ids = s.group(4);
  const epoch = s.epoch();
  for (const p of ids) s.say(p, report(epoch, links(ids, p)));
  t.equal(s.solves.length, 1, 'asked to solve');
  s.lose(ids[3]);
  t.same(s.kinds(ids[0]), ['ring'], 'only the re-form');
  s.solve(s.solves.shift()!);
  t.same(s.kinds(ids[0]), ['ring'], 'the stale solution is dropped');
  s.say(ids[1], report(epoch, links(ids, ids[1])));
  t.same(s.kinds(ids[1]), ['ring'], 'a report of the old epoch is ignored');
  t.same(s.core.groupsInfo()[0].members, ids.slice(0, 3), 'the order is kept');
});

t.test('a failed measurement fails the round for every reporter, late ones too', async (t) => {
  const s = new Sim();
  const ids = s.group(3);
  const epoch = s.epoch();
  s.say(ids[0], report(epoch, links(ids, ids[0])));
  s.say(ids[1], { ...report(epoch, []), code: 'TIMEOUT', message: 'exchange timed out' });
  t.match(s.take(ids[0], 'topoResult'), [{ ok: false, code: 'TIMEOUT', message: /failed on p2: exchange timed out/ }]);
  s.say(ids[2], report(epoch, links(ids, ids[2])));
  t.match(s.take(ids[2], 'topoResult'), [{ ok: false, code: 'TIMEOUT' }]);
});

t.test('a member that never reports: TIMEOUT naming it after voteTimeoutMs', async (t) => {
  const s = new Sim();
  const ids = s.group(3);
  const epoch = s.epoch();
  s.say(ids[0], report(epoch, links(ids, ids[0])));
  s.say(ids[1], report(epoch, links(ids, ids[1])));
  s.advance(5001);
  t.match(s.take(ids[0], 'topoResult'), [{ ok: false, code: 'TIMEOUT', message: new RegExp(`${ids[2]} did not report`) }]);
});

t.test('a solver failure is an error result, not a hang', async (t) => {
  const s = new Sim();
  s.autoSolve = false;
  const ids = s.group(2);
  const epoch = s.epoch();
  for (const p of ids) s.say(p, report(epoch, links(ids, p)));
  const job = s.solves.shift()!;
  s['run'](s.core.apply({ type: 'solved', group: job.group, round: job.round, error: 'worker died' }));
  t.match(s.take(ids[0], 'topoResult'), [{ ok: false, code: 'INTERNAL', message: /worker died/ }]);
});

t.test('maxAgeMs: a plan of the stale pairs only; after a join, just the newcomer\'s pairs', async (t) => {
  const s = new Sim();
  const ids = s.group(3);
  let epoch = s.epoch();
  for (const p of ids) s.say(p, { t: 'topoStart', epoch, maxAgeMs: 60_000 });
  const [plan] = s.take(ids[0], 'topoPlan');
  t.same(plan, { t: 'topoPlan', epoch, pairs: [0, 1, 0, 2] }, 'nothing measured yet: every pair (each member is sent those it belongs to)');
  t.same(s.take(ids[2], 'topoPlan')[0].pairs, [0, 2, 1, 2]);
  for (const p of ids) s.say(p, report(epoch, links(ids, p)));
  for (const p of ids) s.take(p, 'topoResult');
  s.ack(...ids);
  // A fourth peer joins; the others were measured 10 s ago.
  s.now += 10_000;
  const d = s.join(0, 4100);
  for (const p of ids) s.say(p, { t: 'vote', id: 5 });
  s.ack(...ids, d);
  const members = s.core.groupsInfo()[0].members;
  epoch = s.epoch();
  for (const p of members) s.say(p, { t: 'topoStart', epoch, maxAgeMs: 60_000 });
  const [plan2] = s.take(d, 'topoPlan');
  const di = members.indexOf(d);
  const pairs: number[][] = [];
  for (let k = 0; k < plan2.pairs.length; k += 2) pairs.push([plan2.pairs[k], plan2.pairs[k + 1]]);
  t.equal(pairs.length, 3, 'three pairs');
  t.ok(pairs.every((p) => p.includes(di)), 'all of them the newcomer\'s');
  // Only the newcomer's links are reported anew; the rest comes from the stored matrix.
  const all = [...members];
  for (const p of members) s.say(p, report(epoch, links(all, p).filter((l) => p === d || l.to === d)));
  const [r] = s.take(d, 'topoResult');
  t.equal(r.ok, true, 'solved from old and new measurements');
  t.ok(r.matrix!.ageMs[members.indexOf(ids[0])][members.indexOf(ids[1])] >= 10_000, 'old pairs keep their age');
  t.equal(r.matrix!.ageMs[di][0], 0, 'new pairs are fresh');
});

t.test('maxAgeMs: a member that never asks times the plan out for those who did', async (t) => {
  const s = new Sim();
  const ids = s.group(3);
  const epoch = s.epoch();
  s.say(ids[0], { t: 'topoStart', epoch, maxAgeMs: 0 });
  s.say(ids[1], { t: 'topoStart', epoch, maxAgeMs: 0 });
  t.same(s.kinds(ids[0]), [], 'no plan until every member asked');
  s.advance(5001);
  t.match(s.take(ids[0], 'topoResult'), [{ ok: false, code: 'TIMEOUT', message: new RegExp(`${ids[2]}`) }]);
});
