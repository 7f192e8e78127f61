// Issue 21: control messages sized for 1,000 members. The pure Coordinator forms a group of 1,000, re-forms it,
// and runs a whole topology round (plan, reports, solve, result); every message it sends is encoded as a real
// frame, which must fit the 1 MiB frame limit (a `topoResult` with three 1000 x 1000 matrices did not: the
// encode threw, and the rejection ended the master).
import t from 'tap';
import { DEFAULT_MAX_FRAME_BYTES, encodeFrame } from '../../lib/protocol';
import { Sim } from '../helpers/coordinator-sim';

const N = 1000;

/** Encodes every message waiting in every inbox as a frame; returns the largest frame and empties the inboxes. */
function drain(s: Sim): { largest: number; kind: string; count: number } {
  let largest = 0;
  let kind = '';
  let count = 0;
  for (const [, msgs] of s.inbox) {
    for (const m of msgs) {
      const n = encodeFrame(m, DEFAULT_MAX_FRAME_BYTES).length; // throws past the limit
      count++;
      if (n > largest) [largest, kind] = [n, m.t];
    }
    msgs.length = 0;
  }
  return { largest, kind, count };
}

t.test(`a group of ${N}: every control frame fits`, async (t) => {
  const s = new Sim({ ackTimeoutMs: 60_000, voteTimeoutMs: 600_000 });
  s.autoSolve = false;
  const ids = s.group(N);
  t.equal(s.core.groupsInfo()[0].members.length, N);

  s.lose(ids[N - 1]);
  const ring = s.inbox.get(ids[0])!.find((m) => m.t === 'ring');
  t.ok(ring, 'the survivors get a new ring');
  const ringFrames = drain(s);
  t.ok(ringFrames.largest < DEFAULT_MAX_FRAME_BYTES, `re-form: ${ringFrames.count} frames, largest ${ringFrames.kind} of ${ringFrames.largest} bytes`);
  const members = ids.slice(0, N - 1);
  s.ack(...members);
  drain(s);
  const epoch = s.epoch();

  // Plan: each member learns the pairs it belongs to.
  for (const p of members) s.say(p, { t: 'topoStart', epoch, maxAgeMs: 60_000 });
  const plans = s.inbox.get(members[5])!.filter((m) => m.t === 'topoPlan');
  t.equal(plans.length, 1);
  const pairs = (plans[0] as { pairs: number[] }).pairs;
  t.equal(pairs.length / 2, N - 2, 'member 5 measures its N - 2 pairs, not all N(N-1)/2');
  t.ok(pairs.every((x, i) => (i % 2 === 0 ? x === 5 || pairs[i + 1] === 5 : true)), 'every pair includes it');
  const planFrames = drain(s);
  t.ok(planFrames.largest < 64 << 10, `plan frames stay small: largest ${planFrames.largest} bytes`);

  // Reports from every member: one solve of the whole matrix, on the master.
  for (const [i, p] of members.entries()) {
    const links = members.filter((q) => q !== p).map((q, j) => ({ to: q, bytesPerSec: 1e8 + ((i * 7 + j) % 13) * 1e6, rttMs: 1 + (j % 5) }));
    s.say(p, { t: 'topoReport', epoch, bytes: 64 << 20, minGain: 0.5, links, measureMs: 1000, measureBytes: 1 << 20 });
  }
  t.equal(s.solves.length, 1, 'one solve for the whole group');
  const job = s.solves.shift()!;
  t.equal(job.matrix.bandwidth.length, N - 1, 'the master keeps the whole matrix');
  t.ok(drain(s).largest < DEFAULT_MAX_FRAME_BYTES);
});

t.test(`a topology result for ${N} members is one small frame per member`, async (t) => {
  const s = new Sim({ ackTimeoutMs: 60_000, voteTimeoutMs: 600_000 });
  s.autoSolve = false;
  const ids = s.group(N);
  drain(s);
  const epoch = s.epoch();
  for (const [i, p] of ids.entries()) {
    const links = ids.filter((q) => q !== p).map((q, j) => ({ to: q, bytesPerSec: 1e8 + ((i + j) % 11) * 1e6, rttMs: 2 }));
    s.say(p, { t: 'topoReport', epoch, bytes: 64 << 20, minGain: 0.5, links, measureMs: 1000, measureBytes: 1 << 20 });
  }
  const job = s.solves.shift()!;
  // Answer through the Sim so that the effects land in the inboxes.
  (s as unknown as { run(e: unknown): void }).run(s.core.apply({
    type: 'solved', group: 0, round: job.round, solution: { order: ids.map((_, i) => i), predictedMs: 100, currentMs: 100, exact: false, solveMs: 1 },
  }));
  const got = s.inbox.get(ids[17])!.filter((m) => m.t === 'topoResult');
  t.equal(got.length, 1, 'each member gets the result');
  t.equal((got[0] as { matrix?: unknown }).matrix, undefined, 'without the 3 x N x N matrix (it stays on the master)');
  const r = drain(s);
  t.ok(r.largest < 256 << 10, `largest frame ${r.kind} of ${r.largest} bytes`);
  t.equal(r.count, N, 'one result per member');
});
