// Prints README's loopback all-reduce tables from the bench's JSON (bench/results/allreduce.json by default):
//   node --import tsx bench/allreduce/table.ts [path/to/allreduce.json]
// First table: time for small sizes, bus bandwidth and its fraction of raw TCP for the others. Second: CPU seconds
// (all peer processes) per GB sent against raw TCP's, and threads per peer process.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { RESULTS_DIR, fmtBytes } from '../common';

interface Row {
  peers: number;
  connections: number;
  bytes: number;
  medianMs: number;
  busbwGBs: number;
  busbwOfRaw: number;
  cpuSecondsPerGBSent: number;
  rawCpuSecondsPerGBSent: number;
  threadsPerPeer: number;
}

const file = process.argv[2] ?? path.join(RESULTS_DIR, 'allreduce.json');
const rows = (JSON.parse(fs.readFileSync(file, 'utf8')) as { rows: Row[] }).rows;
const sizes = [...new Set(rows.map((r) => r.bytes))].sort((a, b) => a - b);
const groups = [...new Set(rows.map((r) => `${r.peers}/${r.connections}`))].sort((a, b) => {
  const [pa, ka] = a.split('/').map(Number);
  const [pb, kb] = b.split('/').map(Number);
  return pa - pb || ka - kb;
});
const rowOf = (g: string, bytes: number) => rows.find((r) => `${r.peers}/${r.connections}` === g && r.bytes === bytes);
const isLatency = (bytes: number) => bytes < 1 << 20;

const header = (cells: string[]) => `| ${cells.join(' | ')} |\n|${cells.map(() => '---').join('|')}|`;
console.log(header(['peers', 'K', ...sizes.map(fmtBytes)]));
for (const g of groups) {
  const cells = sizes.map((bytes) => {
    const r = rowOf(g, bytes);
    if (!r) return '';
    if (isLatency(bytes)) return `${r.medianMs.toFixed(2)} ms`;
    return `${r.busbwGBs.toFixed(2)} GB/s (${Math.round(r.busbwOfRaw * 100)}%)`;
  });
  console.log(`| ${g.replace('/', ' | ')} | ${cells.join(' | ')} |`);
}

const bulk = sizes.filter((b) => !isLatency(b));
console.log();
console.log(header(['peers', 'K', ...bulk.map((b) => `CPU s/GB sent, ${fmtBytes(b)}`), 'raw TCP', 'threads/peer']));
for (const g of groups) {
  const rs = bulk.map((b) => rowOf(g, b));
  const any = rs.find((r) => r !== undefined);
  if (!any) continue;
  const cells = rs.map((r) => (r ? r.cpuSecondsPerGBSent.toFixed(2) : ''));
  console.log(`| ${g.replace('/', ' | ')} | ${cells.join(' | ')} | ${any.rawCpuSecondsPerGBSent.toFixed(2)} | ${any.threadsPerPeer} |`);
}
