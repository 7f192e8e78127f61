/**
 * Bandwidth-aware topology (docs/topology.md), two parts:
 *
 * 1. Emulated regions (test/harness/wan/regions.ts): 6 and 8 peer processes in two and three regions that joined
 *    round-robin (so the join-order ring crosses between regions at almost every link); 1 Gbit/s and 10 ms RTT
 *    inside a region, 200 Mbit/s and 80 ms RTT between two, shared by all flows between them. A 64 MiB float32
 *    all-reduce in join order, then optimizeTopology() (its wall time, per-peer measuring time and bytes, solver
 *    time), then the same all-reduce in the optimised order; every result checked against the exact sum and
 *    compared byte for byte across peers.
 * 2. The solver alone on synthetic matrices of 8 to 64 peers: time, predicted all-reduce time against join order,
 *    and the local search's gap to the exact optimum where the exact search runs (12 peers or fewer).
 *
 * npm run bench:topology [-- --quick] [-- --part emulated|solver]   (writes bench/results/topology.json)
 */
import { WanEmulator } from '../../test/harness/wan/emulator';
import { RegionsSpec, crossings } from '../../test/harness/wan/regions';
import { expectedFirst } from '../../test/helpers/communicator';
import { startRegionGroup } from '../../test/helpers/region-group';
import { randomMatrix, regionMatrix } from '../../test/helpers/topology-matrices';
import { LinkMatrix, predictRingMs, solveRing } from '../../lib/topology/solver';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { RESULTS_DIR, argValue, machineInfo, median, parseArgs, writeResult } from '../common';

const args = parseArgs(process.argv.slice(2));
const quick = Boolean(args.quick);
const part = argValue('part', 'all');
const SPEC: RegionsSpec = { inside: { delayMs: 5, aggMbps: 1000 }, between: { delayMs: 40, aggMbps: 200 }, betweenSharedMbps: 200 };
const BYTES = quick ? 16 << 20 : 64 << 20;
const RUNS = quick ? 1 : 3;
const CONFIGS = quick ? [{ peers: 6, regions: 2 }] : [{ peers: 6, regions: 2 }, { peers: 8, regions: 2 }, { peers: 6, regions: 3 }, { peers: 8, regions: 3 }];

interface EmulatedResult {
  peers: number;
  regions: number;
  bytes: number;
  joinOrderMs: number;
  joinOrderSamplesMs: number[];
  optimisedMs: number;
  optimisedSamplesMs: number[];
  speedup: number;
  crossingsBefore: number;
  crossingsAfter: number;
  applied: boolean;
  predictedBeforeMs: number;
  predictedAfterMs: number;
  optimizeWallMs: number;
  measureMsPerPeer: number;
  measureBytesTotal: number;
  solveMs: number;
  exact: boolean;
}

/** `runs` all-reduces of `bytes` on every peer; the slowest peer's time of each, after checking the results. */
async function timeAllReduce(peers: import('../../test/harness/process').PeerProcess[], tag: number, runs: number): Promise<number[]> {
  const n = BYTES / 4;
  const values = peers.map((_, i) => i + 1);
  const out: number[] = [];
  for (let r = 0; r < runs; r++) {
    const rs = await Promise.all(peers.map((p) => p.request('allReduce', { n, tag, timeoutMs: 300_000 }, 360_000)));
    const bad = rs.find((x) => !x.ok);
    if (bad) throw new Error(`all-reduce failed: ${bad.code} ${bad.message}`);
    if (JSON.stringify(rs[0].first) !== JSON.stringify(expectedFirst(values, 0))) throw new Error('wrong all-reduce result');
    if (!rs.every((x) => x.hash === rs[0].hash)) throw new Error('peers hold different bytes');
    out.push(Math.max(...rs.map((x) => Number(x.ms))));
  }
  return out;
}

async function emulated(cfg: { peers: number; regions: number }, block: number): Promise<EmulatedResult> {
  const regionOf = [...Array(cfg.peers).keys()].map((i) => i % cfg.regions);
  const emu = await WanEmulator.start();
  try {
    // Generous heartbeats: 8 peer processes and the emulator share two cores here, and this bench measures speed,
    // not failure detection.
    const g = await startRegionGroup(emu, regionOf, SPEC, block, { connections: 4, master: { heartbeatIntervalMs: 1000, peerTimeoutMs: 20_000 } });
    try {
      const idx = (id: string) => g.ids.indexOf(id);
      await Promise.all(g.peers.map((p) => p.request('allReduce', { n: 1 << 18, tag: 1 }, 120_000))); // dial the ring
      const before = await timeAllReduce(g.peers, 2, RUNS);
      const t0 = performance.now();
      const rs = await Promise.all(g.peers.map((p) => p.request('optimize', { bytes: BYTES, timeoutMs: 300_000 }, 360_000)));
      const optimizeWallMs = performance.now() - t0;
      const bad = rs.find((x) => !x.ok);
      if (bad) throw new Error(`optimizeTopology failed: ${bad.code} ${bad.message}`);
      const r = rs[0];
      await Promise.all(g.peers.map((p) => p.request('allReduce', { n: 1 << 18, tag: 3 }, 120_000))); // dial the new ring
      const after = await timeAllReduce(g.peers, 4, RUNS);
      const result: EmulatedResult = {
        ...cfg, bytes: BYTES,
        joinOrderMs: median(before), joinOrderSamplesMs: before, optimisedMs: median(after), optimisedSamplesMs: after,
        speedup: median(before) / median(after),
        crossingsBefore: crossings(g.ids.map(idx), regionOf), crossingsAfter: crossings((r.newOrder as string[]).map(idx), regionOf),
        applied: Boolean(r.applied), predictedBeforeMs: Number(r.predictedBeforeMs), predictedAfterMs: Number(r.predictedAfterMs),
        optimizeWallMs, measureMsPerPeer: median(rs.map((x) => Number(x.measureMs))),
        measureBytesTotal: rs.reduce((s, x) => s + Number(x.measureBytes), 0), solveMs: Number(r.solveMs), exact: Boolean(r.exact),
      };
      console.log(
        `${cfg.peers} peers, ${cfg.regions} regions: join order ${result.joinOrderMs.toFixed(0)} ms (${result.crossingsBefore} crossings), ` +
        `optimised ${result.optimisedMs.toFixed(0)} ms (${result.crossingsAfter} crossings): ${result.speedup.toFixed(2)}x; ` +
        `optimizeTopology ${(optimizeWallMs / 1000).toFixed(1)} s, ${(result.measureBytesTotal / 2 ** 20).toFixed(0)} MiB measuring, solver ${result.solveMs.toFixed(0)} ms`,
      );
      return result;
    } finally {
      await g.stop();
    }
  } finally {
    await emu.close();
  }
}

interface SolverResult {
  peers: number;
  kind: string;
  seeds: number;
  /** The solver as the master runs it (exact up to 12 peers, a 1 s local search above). */
  solveMs: number;
  exactShare: number;
  /** Predicted time of the solved order over join order (median over seeds). */
  predictedVsJoinOrder: number;
  /** A 200 ms local search alone over the best known order: the exact optimum up to 12 peers, else the best of the
   *  master's answer and a 5 s local search (an upper bound on the true gap's reference). Median and worst. */
  shortSearchGapMedian: number;
  shortSearchGapWorst: number;
  reference: 'exact' | 'best of 1 s and 5 s searches';
}

function solverBench(): SolverResult[] {
  const out: SolverResult[] = [];
  const seeds = quick ? 2 : 3;
  const kinds: Array<[string, (n: number, seed: number) => LinkMatrix]> = [
    ['two regions', (n, seed) => regionMatrix(n, (i) => i % 2, seed)],
    ['three regions', (n, seed) => regionMatrix(n, (i) => i % 3, seed)],
    ['random links', (n, seed) => randomMatrix(n, seed)],
  ];
  for (const n of [8, 12, 16, 32, 64]) {
    for (const [kind, make] of kinds) {
      const times: number[] = [];
      const ratios: number[] = [];
      const gaps: number[] = [];
      let exact = 0;
      for (let seed = 1; seed <= seeds; seed++) {
        const m = make(n, seed);
        const s = solveRing(m);
        times.push(s.solveMs);
        ratios.push(s.predictedMs / predictRingMs(m, [...Array(n).keys()]));
        if (s.exact) exact++;
        let best = s.predictedMs;
        if (!s.exact) best = Math.min(best, solveRing(m, { budgetMs: quick ? 1000 : 5000, seed: 2 }).predictedMs);
        const short = solveRing(m, { exactMaxPeers: 0, budgetMs: 200 });
        gaps.push(short.predictedMs / best - 1);
      }
      const r: SolverResult = {
        peers: n, kind, seeds, solveMs: median(times), exactShare: exact / seeds, predictedVsJoinOrder: median(ratios),
        shortSearchGapMedian: median(gaps), shortSearchGapWorst: Math.max(...gaps), reference: exact === seeds ? 'exact' : 'best of 1 s and 5 s searches',
      };
      console.log(
        `solver ${n} peers, ${kind}: ${r.solveMs.toFixed(0)} ms (${exact}/${seeds} exact), predicted ${(r.predictedVsJoinOrder * 100).toFixed(0)}% of join order; ` +
        `200 ms local search ${(r.shortSearchGapMedian * 100).toFixed(2)}% median, ${(r.shortSearchGapWorst * 100).toFixed(2)}% worst above ${r.reference}`,
      );
      out.push(r);
    }
  }
  return out;
}

async function main(): Promise<void> {
  if (process.platform !== 'linux' && part !== 'solver') {
    console.log('The emulated part needs Linux (the WAN emulator); running the solver part only.');
  }
  const solver = part === 'emulated' ? [] : solverBench();
  const emulatedResults: EmulatedResult[] = [];
  if (part !== 'solver' && process.platform === 'linux') {
    let block = 80;
    for (const cfg of CONFIGS) {
      emulatedResults.push(await emulated(cfg, block));
      block += 2;
    }
  }
  // A run of one part keeps the other part's figures from the last run.
  const name = quick ? 'topology-quick' : 'topology';
  const previous = fs.existsSync(path.join(RESULTS_DIR, `${name}.json`)) ? JSON.parse(fs.readFileSync(path.join(RESULTS_DIR, `${name}.json`), 'utf8')) : {};
  const file = writeResult(name, {
    machine: machineInfo(), quick, spec: SPEC, bytes: BYTES, runs: RUNS,
    emulated: part === 'solver' ? previous.emulated ?? [] : emulatedResults,
    solver: part === 'emulated' ? previous.solver ?? [] : solver,
  });
  console.log(`wrote ${file}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
