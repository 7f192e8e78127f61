// The ring-order solver without sockets: the model, the exact solver against brute force, the heuristic on
// two-region matrices, and the worker thread the master runs it in.
import t from 'tap';
import { LinkMatrix, predictRingMs, regionsOf, solveRing } from '../../lib/topology/solver';
import { solveInWorker } from '../../lib/topology/solver-worker';
import { regionMatrix, randomMatrix } from '../helpers/topology-matrices';

const MiB = 1 << 20;

function permutations(xs: number[]): number[][] {
  if (xs.length <= 1) return [xs];
  return xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p]));
}

/** Brute force over every ring starting at 0. */
function bruteForce(m: LinkMatrix, bytes: number): number {
  const n = m.bandwidth.length;
  let best = Infinity;
  for (const p of permutations([...Array(n).keys()].slice(1))) best = Math.min(best, predictRingMs(m, [0, ...p], bytes));
  return best;
}

/** How many ring links go between regions. */
function crossings(order: number[], regionOf: (i: number) => number): number {
  let c = 0;
  for (let k = 0; k < order.length; k++) if (regionOf(order[k]) !== regionOf(order[(k + 1) % order.length])) c++;
  return c;
}

t.test('the model: bottleneck bandwidth plus the sum of one-way delays, times 2(N-1)/N', async (t) => {
  const m: LinkMatrix = {
    bandwidth: [[0, 100e6, 100e6], [50e6, 0, 100e6], [100e6, 25e6, 0]],
    rttMs: [[0, 10, 20], [10, 0, 30], [20, 30, 0]],
  };
  // 0 -> 1 -> 2 -> 0: min bw 100e6, delays (10 + 30 + 20) / 2 = 30 ms.
  t.equal(predictRingMs(m, [0, 1, 2], 100e6), (4 / 3) * (1000 + 30));
  // 0 -> 2 -> 1 -> 0: min bw 25e6 (2 -> 1).
  t.equal(predictRingMs(m, [0, 2, 1], 100e6), (4 / 3) * (4000 + 30));
  t.equal(predictRingMs(m, [0], 100e6), 0, 'one peer moves nothing');
});

t.test('bad matrices are refused with what is wrong', async (t) => {
  t.throws(() => solveRing({ bandwidth: [[0]], rttMs: [[0]] }), /N >= 2/);
  t.throws(() => solveRing({ bandwidth: [[0, 1], [0, 0]], rttMs: [[0, 1], [1, 0]] }), /Bandwidth 1 -> 0 must be a positive/);
  t.throws(() => solveRing({ bandwidth: [[0, 1], [1, 0]], rttMs: [[0, -1], [1, 0]] }), /RTT 0 -> 1/);
  t.throws(() => solveRing(randomMatrix(4, 1), { current: [0, 1, 1, 2] }), /permutation of 0..3/);
});

t.test('exact solver: the brute-force optimum on random directed matrices of 3 to 8 peers', async (t) => {
  for (let n = 3; n <= 8; n++) {
    for (let seed = 1; seed <= 4; seed++) {
      const m = randomMatrix(n, seed * 31 + n);
      for (const bytes of [64 * MiB, 64 * 1024]) {
        const s = solveRing(m, { bytes });
        t.ok(s.exact);
        t.ok(Math.abs(s.predictedMs - bruteForce(m, bytes)) < 1e-9 * s.predictedMs, `n=${n} seed=${seed} bytes=${bytes}: optimum`);
        t.equal(s.predictedMs, predictRingMs(m, s.order, bytes), 'the prediction is that of the order returned');
        t.same([...s.order].sort((a, b) => a - b), [...Array(n).keys()], 'a permutation');
        t.equal(s.order[0], 0, 'rotated to start where the current order starts');
      }
    }
  }
});

t.test('two regions joined alternately: the best ring crosses between them exactly twice', async (t) => {
  for (const n of [6, 8, 12, 16, 32]) {
    const regionOf = (i: number) => i % 2;
    const m = regionMatrix(n, regionOf);
    const current = [...Array(n).keys()];
    t.equal(crossings(current, regionOf), n, `n=${n}: join order crosses at every link`);
    const s = solveRing(m, { current, budgetMs: 300 });
    t.equal(s.exact, n <= 12);
    t.equal(crossings(s.order, regionOf), 2, `n=${n}: crosses twice (${s.exact ? 'exact' : 'heuristic'})`);
    t.ok(s.predictedMs < s.currentMs / 2, `n=${n}: predicted ${s.predictedMs.toFixed(0)} ms vs ${s.currentMs.toFixed(0)} ms in join order`);
  }
});

t.test('three regions: the best ring crosses three times', async (t) => {
  const regionOf = (i: number) => i % 3;
  for (const n of [9, 24]) {
    const s = solveRing(regionMatrix(n, regionOf), { budgetMs: 300 });
    t.equal(crossings(s.order, regionOf), 3, `n=${n}`);
  }
});

t.test('every order equal: the current order is kept', async (t) => {
  for (const n of [5, 20]) {
    const m: LinkMatrix = {
      bandwidth: [...Array(n)].map(() => Array(n).fill(125e6)),
      rttMs: [...Array(n)].map(() => Array(n).fill(10)),
    };
    const current = [...Array(n).keys()].reverse();
    const s = solveRing(m, { current, budgetMs: 50 });
    t.same(s.order, current, `n=${n}: unchanged`);
    t.equal(s.predictedMs, s.currentMs);
  }
});

t.test('heuristic vs exact at 12 peers: within a few percent', async (t) => {
  for (let seed = 1; seed <= 3; seed++) {
    const m = randomMatrix(12, seed);
    const exact = solveRing(m);
    const heur = solveRing(m, { exactMaxPeers: 0, budgetMs: 200 });
    t.ok(heur.predictedMs <= exact.predictedMs * 1.05, `seed ${seed}: heuristic ${heur.predictedMs.toFixed(1)} vs exact ${exact.predictedMs.toFixed(1)} ms`);
    t.ok(heur.predictedMs >= exact.predictedMs * (1 - 1e-9), 'never better than the optimum');
  }
});

t.test('the worker thread gives the same answer, and reports a bad matrix', async (t) => {
  const m = regionMatrix(8, (i) => i % 2);
  const inline = solveRing(m);
  const s = await solveInWorker(m, {});
  t.same(s.order, inline.order);
  t.equal(s.predictedMs, inline.predictedMs);
  await t.rejects(solveInWorker({ bandwidth: [[0, 0], [1, 0]], rttMs: [[0, 1], [1, 0]] }), /solver failed: Bandwidth 0 -> 1/);
});

t.test('regions: split only at a clear gap in link speeds', async (t) => {
  t.same(regionsOf(regionMatrix(6, (i) => i % 2)), [0, 1, 0, 1, 0, 1], 'two regions');
  t.same(regionsOf(regionMatrix(9, (i) => i % 3)), [0, 1, 2, 0, 1, 2, 0, 1, 2], 'three regions');
  const alike = regionMatrix(8, () => 0, 3, 0.3);
  t.same(regionsOf(alike), Array(8).fill(0), 'links alike with +-30% noise: one region');
  alike.bandwidth[2][5] /= 10;
  t.same(regionsOf(alike), Array(8).fill(0), 'one slow pair does not split a region');
  t.same(regionsOf(randomMatrix(12, 5)).every((r) => r === 0), true, 'evenly spread speeds: one region');
});
