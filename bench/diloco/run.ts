/**
 * DiLoCo benchmark: 4 workers train the MNIST MLP of examples/diloco on loopback with the same number of training
 * samples in every configuration; writes bench/diloco/results/README.md (table) and loss.svg (loss curves).
 *
 *   node --import tsx bench/diloco/run.ts [--steps 1000] [--only ddp,diloco,...]
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runLocal, type WorkerResult } from '../../examples/diloco/local';

interface Row {
  name: string;
  accuracy: number;
  loss: number;
  bytesPerWorker: number;
  peakBytesPerSync: number;
  wallSeconds: number;
  secondsPerOuterStep?: number;
  identical: boolean;
  workers: number;
  curve: [number, number][];
  note?: string;
}

const argv = process.argv.slice(2);
const opt = (k: string, d: string) => {
  const i = argv.indexOf(`--${k}`);
  return i >= 0 ? argv[i + 1] : d;
};
const STEPS = Number(opt('steps', '1000'));
const H = Number(opt('inner-steps', '50'));
const only = opt('only', '').split(',').filter(Boolean);
const W = 4;
const common = ['--steps', String(STEPS), '--log-every', String(Math.max(10, STEPS / 40)), '--wait-peers', String(W), '--inner-steps', String(H)];

function summarize(name: string, results: WorkerResult[], wall: number, note?: string): Row {
  const survivors = results;
  const mean = (f: (r: WorkerResult) => number) => survivors.reduce((s, r) => s + f(r), 0) / survivors.length;
  const curve = survivors[0].curve.map(([s], i) => [s, survivors.reduce((acc, r) => acc + (r.curve[i]?.[1] ?? r.curve[r.curve.length - 1][1]), 0) / survivors.length] as [number, number]);
  return {
    name,
    accuracy: mean((r) => r.accuracy),
    loss: mean((r) => r.testLoss),
    bytesPerWorker: Math.max(...survivors.map((r) => r.bytesSent)),
    peakBytesPerSync: Math.max(...survivors.map((r) => r.peakBytesPerSync)),
    wallSeconds: wall,
    identical: new Set(survivors.map((r) => r.paramsHash)).size === 1,
    workers: survivors.length,
    curve,
    note,
  };
}

async function config(name: string, args: string[], extra: Partial<Parameters<typeof runLocal>[0]> = {}, note?: string): Promise<Row | undefined> {
  if (only.length && !only.includes(name)) return undefined;
  process.stderr.write(`running ${name} ...\n`);
  const { results, wallSeconds, exitCodes } = await runLocal({ workers: W, args: [...common, ...args], ...extra });
  if (results.length === 0) throw new Error(`${name}: no worker finished (exit codes ${exitCodes.join(', ')}; see the workers' errors above)`);
  const row = summarize(name, results, wallSeconds, note);
  if (args.includes('async') || args.includes('local')) {
    row.secondsPerOuterStep = (results.reduce((s, r) => s + r.wallSeconds, 0) / results.length) / (STEPS / H);
  }
  process.stderr.write(`  ${name}: acc ${(row.accuracy * 100).toFixed(2)}%  bytes/worker ${(row.bytesPerWorker / 1e6).toFixed(2)} MB  wall ${wallSeconds.toFixed(1)} s  identical ${row.identical}\n`);
  return row;
}

async function main() {
  const rows: Row[] = [];
  const failed: string[] = [];
  const add = async (r: Promise<Row | undefined>) => {
    try {
      const row = await r;
      if (row) rows.push(row);
    } catch (err) {
      failed.push((err as Error).message);
      process.stderr.write(`  ${(err as Error).message}\n`);
    }
  };
  await add(config('ddp', ['--mode', 'ddp'], {}, 'gradients all-reduced every step'));
  await add(config('local', ['--mode', 'local'], {}, 'no communication (each worker alone)'));
  await add(config('diloco', ['--mode', 'diloco'], {}, `H=${H}, Nesterov 0.7/0.9`));
  await add(config('diloco-uint8', ['--mode', 'diloco', '--quant', 'uint8']));
  await add(config('streaming', ['--mode', 'streaming', '--fragments', '4', '--overlap', '1'], {}, 'P=4, tau=1, alpha=0.5'));
  await add(config('streaming-uint8', ['--mode', 'streaming', '--fragments', '4', '--overlap', '1', '--quant', 'uint8']));
  await add(config('async', ['--mode', 'async'], {}, 'all-reduce overlaps the next H inner steps'));
  await add(
    config(
      'churn',
      ['--mode', 'diloco'],
      { workerArgs: (i) => (i === W - 1 ? ['--exit-after', String(Math.round(STEPS / 3))] : []), joinAtStep: Math.round((2 * STEPS) / 3), joinShard: `${W - 1}/${W}` },
      `worker ${W - 1} crashes at step ${Math.round(STEPS / 3)}, a new worker joins at ~${Math.round((2 * STEPS) / 3)}`,
    ),
  );
  const outDir = path.join(__dirname, 'results');
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, 'results.json'), JSON.stringify({ steps: STEPS, innerSteps: H, workers: W, rows }, null, 2));
  const text = table(rows) + (failed.length ? `\nNot measured:\n${failed.map((f) => `- ${f}`).join('\n')}\n` : '');
  fs.writeFileSync(path.join(outDir, 'README.md'), text);
  fs.writeFileSync(path.join(outDir, 'loss.svg'), chart(rows));
  console.log(text);
}

function table(rows: Row[]): string {
  const base = rows.find((r) => r.name === 'ddp');
  const lines = [
    `DiLoCo benchmark: ${W} workers, ${STEPS} inner steps x batch 32 each (${(W * STEPS * 32).toLocaleString('en-US')} samples per run), MLP 784-64-10 on the mnist package, loopback, ${new Date().toISOString().slice(0, 10)}.`,
    '',
    '| run | test accuracy | test loss | MB sent per worker | vs ddp | peak KB per sync | wall s | s per outer step | peers bit-identical | note |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    const ratio = base && r.bytesPerWorker > 0 ? `${(base.bytesPerWorker / r.bytesPerWorker).toFixed(1)}x fewer` : '';
    lines.push(
      `| ${r.name} | ${(r.accuracy * 100).toFixed(2)}% | ${r.loss.toFixed(4)} | ${(r.bytesPerWorker / 1e6).toFixed(2)} | ${r.name === 'ddp' ? '1x' : ratio} | ${(r.peakBytesPerSync / 1e3).toFixed(1)} | ${r.wallSeconds.toFixed(1)} | ${r.secondsPerOuterStep?.toFixed(3) ?? ''} | ${r.name === 'local' ? 'n/a' : r.identical ? 'yes' : 'no'} (${r.workers}) | ${r.note ?? ''} |`,
    );
  }
  return lines.join('\n') + '\n';
}

function chart(rows: Row[]): string {
  const w = 720, h = 420, m = 50;
  const maxStep = STEPS;
  const maxLoss = Math.min(2.5, Math.max(...rows.flatMap((r) => r.curve.map((c) => c[1]))));
  const colors = ['#000', '#999', '#d62728', '#ff7f0e', '#1f77b4', '#17becf', '#2ca02c', '#9467bd'];
  const x = (s: number) => m + ((w - 2 * m) * s) / maxStep;
  const y = (l: number) => h - m - ((h - 2 * m) * Math.min(l, maxLoss)) / maxLoss;
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif" font-size="12">`, `<rect width="${w}" height="${h}" fill="#fff"/>`];
  parts.push(`<line x1="${m}" y1="${h - m}" x2="${w - m}" y2="${h - m}" stroke="#000"/><line x1="${m}" y1="${m}" x2="${m}" y2="${h - m}" stroke="#000"/>`);
  parts.push(`<text x="${w / 2}" y="${h - 12}" text-anchor="middle">inner step</text><text x="14" y="${h / 2}" transform="rotate(-90 14 ${h / 2})" text-anchor="middle">training loss (mean of workers)</text>`);
  for (let k = 0; k <= 4; k++) {
    parts.push(`<text x="${x((maxStep * k) / 4)}" y="${h - m + 16}" text-anchor="middle">${(maxStep * k) / 4}</text>`);
    parts.push(`<text x="${m - 6}" y="${y((maxLoss * k) / 4) + 4}" text-anchor="end">${((maxLoss * k) / 4).toFixed(2)}</text>`);
  }
  rows.forEach((r, i) => {
    const pts = r.curve.map(([s, l]) => `${x(s).toFixed(1)},${y(l).toFixed(1)}`).join(' ');
    parts.push(`<polyline fill="none" stroke="${colors[i % colors.length]}" stroke-width="1.5" points="${pts}"/>`);
    parts.push(`<text x="${w - m - 130}" y="${m + 14 * i}" fill="${colors[i % colors.length]}">${r.name}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
