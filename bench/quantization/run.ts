// Quantized all-reduce benchmark. Writes bench/results/quantization.json.
//   node --import tsx bench/quantization/run.ts [--quick] [--peers 2,3,4] [--mib 64] [--iters 5]
// 1. codec throughput on one core (encode / decode / decodeAccumulate, GB/s of float32), median of runs;
// 2. quantized vs float32 all-reduce time of peer processes on loopback (median per peer, slowest peer);
// 3. RMS error against a float64 reference vs the number of peers (avg of N(0,1) inputs per peer).
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ROOT, machineInfo, median, parseArgs, writeResult } from '../common';
import { configure, startRing, stopAll } from '../../test/helpers/ring';
import { runQ } from '../../test/helpers/quantized';

const args = parseArgs(process.argv.slice(2));
const quick = Boolean(args.quick);
const peerCounts = String(args.peers ?? (quick ? '2,4' : '2,3,4')).split(',').map(Number);
const mib = Number(args.mib ?? 64);
const iters = Number(args.iters ?? (quick ? 3 : 5));
const codecs = [null, 'uint8', 'uint4', 'float16', 'bfloat16'] as const;

function codecBench(): any {
  // -O3 -ffp-contract=off: the flags of the addon build (binding.gyp).
  const out = path.join(ROOT, 'build', 'bench', 'quant_codec_bench');
  const srcs = ['bench/quantization/codec_bench.cpp', 'native/core/codec.cpp'].map((s) => path.join(ROOT, s));
  if (!fs.existsSync(out) || fs.statSync(out).mtimeMs < Math.max(...srcs.map((s) => fs.statSync(s).mtimeMs))) {
    fs.mkdirSync(path.dirname(out), { recursive: true });
    execFileSync('g++', ['-std=c++20', '-O3', '-ffp-contract=off', '-I', path.join(ROOT, 'native/core'), ...srcs, '-o', out], { stdio: 'inherit' });
  }
  const elements = quick ? 4 << 20 : 16 << 20;
  return JSON.parse(execFileSync(out, [String(elements), quick ? '3' : '7', '256']).toString());
}

async function allReduceTimes(): Promise<any[]> {
  const rows: any[] = [];
  const count = (mib << 20) / 4;
  for (const n of peerCounts) {
    const peers = await startRing(n, { env: { TCCL_TEST_CONNECTIONS: '4' } });
    try {
      for (const codec of codecs) {
        const quantization = codec ? { codec, blockSize: 256 } : undefined;
        const replies = await Promise.all(peers.map((p) => p.request(
          { cmd: 'bench', bench: { dtype: 'float32', count, iters, warmup: 1, quantization } }, 600_000)));
        const ms = Math.max(...replies.map((r) => median(r.times)));
        const row = { peers: n, codec: codec ?? 'none (float32 ring)', bytes: count * 4, iters, medianMs: ms, loopDelayMaxMs: Math.max(...replies.map((r) => r.loopDelayMaxMs)) };
        rows.push(row);
        console.log(`${n} peers, ${mib} MiB float32, ${row.codec}: median ${ms.toFixed(1)} ms`);
      }
    } finally {
      await stopAll(peers);
    }
  }
  for (const r of rows) {
    const base = rows.find((b) => b.peers === r.peers && b.codec.startsWith('none'));
    r.speedupVsFloat32 = base.medianMs / r.medianMs;
  }
  return rows;
}

async function errorVsPeers(): Promise<any[]> {
  const maxN = quick ? 4 : 8;
  const all = await startRing(maxN);
  const rows: any[] = [];
  const count = quick ? 65_536 : 262_144;
  try {
    let epoch = 2;
    for (let n = 2; n <= maxN; n++) {
      const peers = all.slice(0, n);
      await configure(peers, { epoch });
      epoch++;
      const qs = [
        { codec: 'uint8', blockSize: 256 }, { codec: 'uint4', blockSize: 256 }, { codec: 'uint4', blockSize: 256, stochastic: true },
        { codec: 'float16' }, { codec: 'bfloat16' },
      ];
      const res = await runQ(peers, (p) => qs.map((q, i) => ({ count, dist: 'normal', seed: 3, tag: i, op: 'avg', quantization: q, stats: p.rank === 0, bound: false })), 600_000);
      qs.forEach((q, i) => {
        const s = res[0][i].stats;
        rows.push({ peers: n, codec: q.codec + ((q as any).stochastic ? '-stochastic' : ''), rmsError: s.rms, maxError: s.max, resultRms: s.refRms, relativeRms: s.rms / s.refRms });
      });
      console.log(`${n} peers: ` + rows.filter((r) => r.peers === n).map((r) => `${r.codec} rms ${r.rmsError.toExponential(2)}`).join(', '));
    }
  } finally {
    await stopAll(all);
  }
  return rows;
}

async function main() {
  const codec = codecBench();
  for (const c of codec.codecs) console.log(`codec ${c.codec}: encode ${c.encodeGBs} GB/s, decode ${c.decodeGBs}, decodeAccumulate ${c.decodeAccumulateGBs} (one core)`);
  const allReduce = await allReduceTimes();
  const error = await errorVsPeers();
  const file = writeResult('quantization', {
    machine: machineInfo(), quick,
    notes: 'codec GB/s = float32 bytes per second on one core, median of runs; all-reduce: median per peer over iters, slowest peer, loopback, 4 connections per link; error: avg of N(0,1) inputs, RMS vs float64 reference',
    codec, allReduce, error,
  });
  console.log(`wrote ${file}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
