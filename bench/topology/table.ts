// Prints the tables of docs/topology.md and README from the bench's JSON (bench/results/topology.json by default):
//   node --import tsx bench/topology/table.ts [path/to/topology.json]
import * as fs from 'node:fs';
import * as path from 'node:path';
import { RESULTS_DIR } from '../common';

interface Emulated {
  peers: number;
  regions: number;
  joinOrderMs: number;
  optimisedMs: number;
  speedup: number;
  crossingsBefore: number;
  crossingsAfter: number;
  optimizeWallMs: number;
  measureMsPerPeer: number;
  measureBytesTotal: number;
  solveMs: number;
  exact: boolean;
}

interface Solver {
  peers: number;
  kind: string;
  solveMs: number;
  exactShare: number;
  predictedVsJoinOrder: number;
  shortSearchGapMedian: number;
  shortSearchGapWorst: number;
}

const file = process.argv[2] ?? path.join(RESULTS_DIR, 'topology.json');
const data = JSON.parse(fs.readFileSync(file, 'utf8')) as { emulated: Emulated[]; solver: Solver[] };
const s = (ms: number) => (ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${(ms / 1000).toFixed(2)} s`);
const words = ['', 'one', 'two', 'three', 'four'];

console.log('| peers, regions | join order | optimised | speedup | `optimizeTopology()` (measuring per peer) | bytes sent measuring (all peers) | solver |');
console.log('| --- | --- | --- | --- | --- | --- | --- |');
for (const e of data.emulated) {
  console.log(
    `| ${e.peers}, ${words[e.regions] ?? e.regions} | ${s(e.joinOrderMs)} (${e.crossingsBefore} crossings) | ${s(e.optimisedMs)} (${e.crossingsAfter}) | ` +
    `**${e.speedup.toFixed(2)}x** | ${(e.optimizeWallMs / 1000).toFixed(1)} s (${(e.measureMsPerPeer / 1000).toFixed(1)} s) | ` +
    `${(e.measureBytesTotal / 2 ** 20).toFixed(0)} MiB | ${e.solveMs.toFixed(0)} ms${e.exact ? ', exact' : ''} |`,
  );
}
console.log();
const pct = (x: number) => `${(x * 100).toFixed(x < 0.01 && x > 0 ? 2 : x < 0.1 ? 2 : 1)}%`;
const kinds = ['two regions', 'three regions', 'random links'];
console.log('| peers | solver time | predicted vs join order (two regions / three / random) | 200 ms search above the reference, median (worst): two regions / three / random |');
console.log('| --- | --- | --- | --- |');
for (const n of [...new Set(data.solver.map((r) => r.peers))]) {
  const rows = kinds.map((k) => data.solver.find((r) => r.peers === n && r.kind === k)!);
  const times = rows.map((r) => r.solveMs);
  const exact = rows.every((r) => r.exactShare === 1);
  const time = exact ? `${Math.min(...times).toFixed(0)}-${Math.max(...times).toFixed(0)} ms, exact` : `${(Math.max(...times) / 1000).toFixed(0)} s`;
  const gap = rows.map((r) => (r.shortSearchGapWorst === 0 ? '0%' : `${pct(r.shortSearchGapMedian)} (${pct(r.shortSearchGapWorst)})`)).join(' / ');
  console.log(`| ${n} | ${time} | ${rows.map((r) => `${(r.predictedVsJoinOrder * 100).toFixed(0)}%`).join(' / ')} | ${gap} |`);
}
