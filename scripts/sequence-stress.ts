/**
 * The long run of the randomized operation sequence (test/helpers/sequence.ts): `npm run stress -- --sequence N
 * [--seed S]`. Static groups of real peer processes (2-4 peers, 1-4 connections per link, a new group every 1000
 * operations) run N operations in total, each peer on its own without waiting for the others; every result is
 * checked on every peer and compared across peers. Prints a JSON summary and PASS/FAIL.
 */
import { compareDigests, makeSequence, SequenceReport } from '../test/helpers/sequence';
import { startRing, stopAll } from '../test/helpers/ring';

export async function sequenceStress(total: number, seed: number): Promise<number> {
  const chunk = 1000;
  const failures: string[] = [];
  let done = 0;
  let groups = 0;
  const t0 = Date.now();
  while (done < total && failures.length === 0) {
    const peers = 2 + (groups % 3);
    const connections = 1 + ((groups * 7) % 4);
    const operations = Math.min(chunk, total - done);
    const groupSeed = seed * 100_003 + groups;
    const ring = await startRing(peers, { env: { TCCL_TEST_CONNECTIONS: String(connections) } });
    try {
      const sequence = { seed: groupSeed, operations, peers, maxCount: 200_000 };
      const reports: SequenceReport[] = await Promise.all(ring.map((p) => p.request({ cmd: 'sequence', sequence }, 30 * 60_000)));
      for (const r of reports) if (r.failure) failures.push(`${peers} peers, K=${connections}, seed ${groupSeed}: ${r.failure}`);
      const differs = failures.length ? undefined : compareDigests(makeSequence(groupSeed, peers, operations, 200_000), reports);
      if (differs) failures.push(`${peers} peers, K=${connections}, seed ${groupSeed}: ${differs}`);
    } finally {
      await stopAll(ring);
    }
    done += operations;
    groups++;
    process.stderr.write(`sequence: ${done}/${total} operations, ${groups} groups, ${Math.round((Date.now() - t0) / 1000)} s\n`);
  }
  const summary = { operations: done, groups, seed, seconds: Math.round((Date.now() - t0) / 1000), failures };
  process.stdout.write(JSON.stringify(summary, null, 2) + '\n');
  process.stdout.write(failures.length === 0 ? 'sequence stress: PASS\n' : 'sequence stress: FAIL\n');
  return failures.length === 0 ? 0 : 1;
}
