// Back-to-back and concurrent operations between real peer processes (issue 11): every peer runs the same
// randomized plan on its own, with the default tag reused one operation after another; every result is checked
// on every peer and compared across peers. Before the fix, two healthy peers hung here within a few hundred
// operations (one completed a direct all-reduce before it had sent its input, then met the other in the next op).
// The plan is fixed by its seed; `npm run stress -- --sequence N` runs a longer one.
import t from 'tap';
import { startRing, stopAll } from '../helpers/ring';
import { compareDigests, makeSequence, SequenceReport } from '../helpers/sequence';

const SEED = Number(process.env.TCCL_SEQUENCE_SEED ?? 11);
const OPERATIONS = Number(process.env.TCCL_SEQUENCE_OPS ?? 300);

for (const [peers, connections] of [[2, 1], [2, 4], [3, 2], [4, 3]]) {
  t.test(`${OPERATIONS} random operations, ${peers} peers, K=${connections}`, async (t) => {
    const ring = await startRing(peers, { env: { TCCL_TEST_CONNECTIONS: String(connections) } });
    t.teardown(() => stopAll(ring));
    const seed = SEED * 100 + peers * 10 + connections;
    const sequence = { seed, operations: OPERATIONS, peers, maxCount: 100_000 };
    const reports: SequenceReport[] = await Promise.all(ring.map((p) => p.request({ cmd: 'sequence', sequence }, 120_000)));
    const failures = reports.map((r) => r.failure).filter(Boolean);
    t.same(failures, [], `every operation succeeded with the right values on every peer (seed ${seed})`);
    t.equal(compareDigests(makeSequence(seed, peers, OPERATIONS, 100_000), reports), undefined, 'every peer holds the same bytes');
    t.equal(reports[0].digests.length, OPERATIONS, 'all operations ran');
  });
}
