// Prints the WAN all-reduce table of docs/wan.md and README from the bench's JSON (bench/results/wan.json by default):
//   node --import tsx bench/wan/table.ts [path/to/wan.json]
// Per peers and K, per size: float32's bus bandwidth, its fraction of the link and its time; each quantized codec's
// time and its speed-up over float32 in the same run.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { RESULTS_DIR } from '../common';

interface Row {
  peers: number;
  k: number;
  sizeMiB: number;
  codec: string;
  seconds: number;
  busMbps: number;
  fractionOfAggregate: number;
}

const file = process.argv[2] ?? path.join(RESULTS_DIR, 'wan.json');
const rows = (JSON.parse(fs.readFileSync(file, 'utf8')) as { allReduce: Row[] }).allReduce;
const uniq = <T>(xs: T[]) => [...new Set(xs)].sort((a, b) => Number(a) - Number(b));
const sizes = uniq(rows.map((r) => r.sizeMiB));
const codecs = [...new Set(rows.map((r) => r.codec))].filter((c) => c !== 'float32');
const find = (peers: number, k: number, size: number, codec: string) =>
  rows.find((r) => r.peers === peers && r.k === k && r.sizeMiB === size && r.codec === codec);

const columns = sizes.flatMap((s) => [`${s} MiB float32`, ...codecs.map((c) => `${s} MiB ${c}`)]);
console.log(`| peers | K | ${columns.join(' | ')} |`);
console.log(`|---|---|${columns.map(() => '---').join('|')}|`);
for (const peers of uniq(rows.map((r) => r.peers))) {
  for (const k of uniq(rows.filter((r) => r.peers === peers).map((r) => r.k))) {
    const cells = sizes.flatMap((size) => {
      const f = find(peers, k, size, 'float32');
      const first = f ? `${Math.round(f.busMbps)} Mbit/s (${Math.round(f.fractionOfAggregate * 100)}%), ${f.seconds.toFixed(2)} s` : '';
      return [
        first,
        ...codecs.map((c) => {
          const q = find(peers, k, size, c);
          if (!q) return '';
          return f ? `${q.seconds.toFixed(2)} s (${(f.seconds / q.seconds).toFixed(1)}x)` : `${q.seconds.toFixed(2)} s`;
        }),
      ];
    });
    console.log(`| ${peers} | ${k} | ${cells.join(' | ')} |`);
  }
}
