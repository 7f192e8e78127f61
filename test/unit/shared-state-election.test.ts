// The master's election and transfer planning (pure functions), and the retry plan every peer derives.
import t from 'tap';
import {
  electSharedState, electWithout, planTransfers, syncedPeers, PeerStateReport, SyncStrategy,
} from '../../lib/shared-state/election';
import { retryTransfers } from '../../lib/shared-state/transfer';
import { STATE_ERROR_CODES } from '../../lib/shared-state/state';

const MiB = 1 << 20;
const h = (n: number) => n.toString(16).padStart(16, '0');

function report(peerId: string, revision: number, hashes: Record<string, number>, strategy: SyncStrategy = 'enforcePopular', bytes = 12 * MiB): PeerStateReport {
  return {
    peerId, strategy, revision,
    entries: Object.fromEntries(Object.entries(hashes).map(([k, v]) => [k, { hash: h(v), byteLength: bytes, dtype: 'float32' as const }])),
  };
}

t.test('the most popular set wins; out-of-date peers and their differing entries', async (t) => {
  const d = electSharedState([
    report('a', 5, { w: 1, m: 2 }),
    report('b', 5, { w: 1, m: 2 }),
    report('c', 5, { w: 1, m: 3 }),
    report('d', 0, { w: 0, m: 0 }),
  ]);
  t.equal(d.revision, 5);
  t.same(d.upToDate, ['a', 'b']);
  t.same(d.sources, ['a', 'b']);
  t.same(d.outdated, { c: ['m'], d: ['m', 'w'] }, 'c lacks only the altered entry');
  t.same(d.failures, {});
  t.same(syncedPeers(d), ['a', 'b', 'c', 'd']);
  const toC = d.transfers.filter((x) => x.to === 'c');
  t.same(toC.map((x) => x.key), ['m', 'm'], 'only the altered entry goes to c');
  t.equal(toC.reduce((s, x) => s + x.length, 0), 12 * MiB);
  t.same(new Set(toC.map((x) => x.from)), new Set(['a', 'b']), 'split between both sources');
  t.equal(new Set(d.transfers.map((x) => x.stream)).size, d.transfers.length, 'stream ids unique');
  t.same(electSharedState([...[report('d', 0, { w: 0, m: 0 }), report('c', 5, { w: 1, m: 3 })], report('b', 5, { w: 1, m: 2 }), report('a', 5, { w: 1, m: 2 })]), d, 'report order does not matter');
});

t.test('ties: the higher revision, then the set of the smallest peer id', async (t) => {
  const d1 = electSharedState([report('a', 3, { w: 1 }), report('b', 4, { w: 2 })]);
  t.equal(d1.revision, 4);
  t.same(d1.sources, ['b']);
  const d2 = electSharedState([report('zed', 4, { w: 9 }), report('amy', 4, { w: 8 }), report('bob', 4, { w: 7 })]);
  t.same(d2.sources, ['amy']);
  t.same(Object.keys(d2.outdated), ['bob', 'zed']);
});

t.test('sendOnly wins outright when its peers agree, and conflicting sendOnly peers are dropped', async (t) => {
  const d = electSharedState([
    report('a', 5, { w: 1 }), report('b', 5, { w: 1 }), report('c', 5, { w: 2 }, 'sendOnly'),
  ]);
  t.same(d.sources, ['c'], 'the sendOnly state beats the popular one');
  t.same(Object.keys(d.outdated), ['a', 'b']);
  const agree = electSharedState([report('s1', 5, { w: 2 }, 'sendOnly'), report('s2', 5, { w: 2 }, 'sendOnly'), report('x', 1, { w: 0 })]);
  t.same(agree.sources, ['s1', 's2']);
  const c = electSharedState([
    report('s1', 5, { w: 2 }, 'sendOnly'), report('s2', 5, { w: 3 }, 'sendOnly'), report('p', 5, { w: 4 }), report('q', 5, { w: 5 }, 'receiveOnly'),
  ]);
  t.same(c.drop, ['s1', 's2']);
  for (const p of ['s1', 's2']) {
    t.equal(c.failures[p].code, STATE_ERROR_CODES.sendOnlyConflict);
    t.match(c.failures[p].message, /s1 hold revision 5/);
    t.match(c.failures[p].message, /s2 hold revision 5/);
  }
  t.same(c.sources, ['p'], 'the rest elect among enforcePopular peers');
  t.same(c.outdated, { q: ['w'] });
  const only = electSharedState([report('s1', 5, { w: 2 }, 'sendOnly'), report('s2', 5, { w: 3 }, 'sendOnly'), report('r', 5, { w: 4 }, 'receiveOnly')]);
  t.equal(only.failures.r.code, STATE_ERROR_CODES.noSource, 'nobody left to offer state');
});

t.test('receiveOnly peers never offer state; nobody offering is an error for everyone', async (t) => {
  const d = electSharedState([report('a', 2, { w: 1 }, 'receiveOnly'), report('b', 2, { w: 2 }), report('c', 2, { w: 1 }, 'receiveOnly')]);
  t.same(d.sources, ['b'], 'two receiveOnly peers holding the same set do not outvote one enforcePopular');
  t.same(Object.keys(d.outdated), ['a', 'c']);
  const up = electSharedState([report('a', 2, { w: 2 }, 'receiveOnly'), report('b', 2, { w: 2 })]);
  t.same(up.upToDate, ['a', 'b']);
  t.same(up.sources, ['b'], 'an up-to-date receiveOnly peer is not a source');
  t.same(up.transfers, []);
  const none = electSharedState([report('a', 2, { w: 1 }, 'receiveOnly'), report('b', 2, { w: 1 }, 'receiveOnly')]);
  for (const p of ['a', 'b']) {
    t.equal(none.failures[p].code, STATE_ERROR_CODES.noSource);
    t.match(none.failures[p].message, /receiveOnly/);
  }
});

t.test('allowContentInequality entries are not reported and never count', async (t) => {
  // Such entries are left out of hashState's digest; peers that differ only there are up to date.
  const d = electSharedState([report('a', 1, { w: 1 }), report('b', 1, { w: 1 })]);
  t.same(d.upToDate, ['a', 'b']);
  // A peer that syncs an entry the others mark allowContentInequality cannot take the state.
  const l = electSharedState([report('a', 1, { w: 1 }), report('b', 1, { w: 1 }), report('c', 1, { w: 1, rng: 5 })]);
  t.equal(l.failures.c.code, STATE_ERROR_CODES.layout);
  t.match(l.failures.c.message, /"rng"/);
  const size = electSharedState([report('a', 1, { w: 1 }), report('b', 1, { w: 1 }), report('c', 1, { w: 2 }, 'enforcePopular', 5)]);
  t.equal(size.failures.c.code, STATE_ERROR_CODES.layout);
  t.match(size.failures.c.message, /5 bytes/);
});

t.test('revisions advance by exactly one per sync', async (t) => {
  const previous = { revision: 7, peers: ['a', 'b', 'c'] };
  const d = electSharedState([report('a', 8, { w: 1 }), report('b', 8, { w: 1 }), report('c', 7, { w: 1 }), report('new', 0, { w: 0 })], { previous });
  t.equal(d.failures.c.code, STATE_ERROR_CODES.revision);
  t.match(d.failures.c.message, /expected revision 8/);
  t.match(d.failures.c.message, /got 7/);
  t.equal(d.revision, 8);
  t.same(d.outdated, { new: ['w'] }, 'a new peer is exempt and receives');
  const skip = electSharedState([report('a', 10, { w: 1 }), report('b', 8, { w: 1 })], { previous: { revision: 7, peers: ['a', 'b'] } });
  t.match(skip.failures.a.message, /expected revision 8.*got 10/);
  t.same(skip.sources, ['b']);
  // A popular newcomer set at a wrong revision cannot be elected over the expected revision.
  const pop = electSharedState(
    [report('a', 8, { w: 1 }), report('n1', 3, { w: 3 }), report('n2', 3, { w: 3 })],
    { previous: { revision: 7, peers: ['a'] } },
  );
  t.equal(pop.revision, 8);
  t.same(pop.sources, ['a']);
  // Same content, other revision: only the revision changes.
  const rev = electSharedState([report('a', 8, { w: 1 }), report('n', 2, { w: 1 })], { previous: { revision: 7, peers: ['a'] } });
  t.same(rev.outdated, { n: [] });
  t.same(rev.transfers, []);
  const all = electSharedState([report('a', 9, { w: 1 }), report('b', 9, { w: 1 })], { previous: { revision: 7, peers: ['a', 'b'] } });
  t.equal(all.failures.a.code, STATE_ERROR_CODES.revision);
  t.same(Object.keys(all.failures).sort(), ['a', 'b']);
});

t.test('the plan: proportional aligned ranges, small entries whole to the least-loaded source', async (t) => {
  const entries = { big: { hash: h(1), byteLength: 100 * MiB + 3, dtype: 'float32' as const }, s1: { hash: h(2), byteLength: 1000, dtype: 'uint8' as const }, s2: { hash: h(3), byteLength: 1000, dtype: 'uint8' as const }, s3: { hash: h(3), byteLength: 1000, dtype: 'uint8' as const } };
  const plan = planTransfers({ entries, outdated: { r: ['big', 's1', 's2', 's3'] }, sources: ['x', 'y', 'z'] }, { sourceWeights: { x: 2 } });
  const big = plan.filter((p) => p.key === 'big');
  t.same(big.map((p) => p.from), ['x', 'y', 'z']);
  t.equal(big[0].offset, 0);
  for (let i = 1; i < big.length; i++) {
    t.equal(big[i].offset, big[i - 1].offset + big[i - 1].length, 'contiguous');
    t.equal(big[i].offset % MiB, 0, 'aligned');
  }
  t.equal(big.at(-1)!.offset + big.at(-1)!.length, 100 * MiB + 3, 'covers the entry');
  t.ok(Math.abs(big[0].length - 50 * MiB) <= MiB, `weight 2 gets half (${big[0].length})`);
  const small = plan.filter((p) => p.key !== 'big');
  t.same(small.map((p) => [p.key, p.from, p.length]), [['s1', 'x', 1000], ['s2', 'y', 1000], ['s3', 'z', 1000]], 'least loaded relative to weight');
  const one = planTransfers({ entries, outdated: { r: ['big'] }, sources: ['x'] });
  t.same(one.map((p) => [p.from, p.offset, p.length]), [['x', 0, 100 * MiB + 3]]);
});

t.test('re-deciding without a lost source; retry plans rotate through the sources', async (t) => {
  const reports = [report('a', 5, { w: 1 }), report('b', 5, { w: 1 }), report('c', 5, { w: 1 }), report('r', 0, { w: 0 }, 'receiveOnly')];
  const d = electSharedState(reports);
  t.same(new Set(d.transfers.map((x) => x.from)), new Set(['a', 'b', 'c']));
  const d2 = electWithout(reports, ['b']);
  t.same(d2.sources, ['a', 'c']);
  t.ok(d2.transfers.every((x) => x.from !== 'b'));
  t.equal(d2.transfers.reduce((s, x) => s + x.length, 0), 12 * MiB);
  const gone = electWithout(reports, ['a', 'b', 'c']);
  t.equal(gone.failures.r.code, STATE_ERROR_CODES.noSource);
  const failed = new Map([['r', new Set(['w'])]]);
  const froms = [1, 2, 3].map((round) => retryTransfers(d, failed, round)[0].from);
  t.same(new Set(froms), new Set(['a', 'b', 'c']), 'each retry round uses another source');
  t.same(retryTransfers(d, failed, 1)[0], { from: froms[0], to: 'r', key: 'w', offset: 0, length: 12 * MiB, stream: 0 });
});

t.test('malformed reports are TypeErrors', async (t) => {
  t.throws(() => electSharedState([report('a', 1, { w: 1 }), report('a', 1, { w: 1 })]), /Two shared-state reports from a/);
  t.throws(() => electSharedState([{ ...report('a', 1, {}), strategy: 'greedy' as SyncStrategy }]), /unknown strategy/);
  t.throws(() => electSharedState([{ ...report('a', 1, {}), revision: -2 }]), /revision/);
  t.throws(() => electSharedState([{ peerId: 'a', strategy: 'sendOnly', revision: 1, entries: { w: { hash: 'xyz', byteLength: 1, dtype: 'uint8' } } }]), /hash/);
});
