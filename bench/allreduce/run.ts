// npm run bench: ring all-reduce throughput of 2, 3 and 4 peer processes on loopback, against raw loopback TCP
// with the same number of connections measured in the same run. Writes bench/results/allreduce.json.
//   node --import tsx bench/allreduce/run.ts [--quick] [--peers 2,3,4] [--connections 1,4,8] [--iters 10]
import { spawn } from 'node:child_process';
import * as readline from 'node:readline';
import { buildHelper, fmtBytes, machineInfo, median, parseArgs, writeResult } from '../common';
import { startRing, stopAll } from '../../test/helpers/ring';

const args = parseArgs(process.argv.slice(2));
const quick = Boolean(args.quick);
const peerCounts = String(args.peers ?? '2,3,4').split(',').map(Number);
const connectionCounts = String(args.connections ?? (quick ? '4' : '1,4,8')).split(',').map(Number);
const iters = Number(args.iters ?? (quick ? 5 : 10));
const sizes = (quick ? [4 << 10, 1 << 20, 64 << 20] : [4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20, 256 << 20]);

async function rawTcp(k: number, bytes: number): Promise<number> {
  const exe = buildHelper('rawtcp', ['bench/allreduce/rawtcp.cpp', 'native/core/socket.cpp']);
  const runs: number[] = [];
  for (let r = 0; r < 3; r++) {
    const server = spawn(exe, ['serve', '0', String(k), String(bytes)], { stdio: ['ignore', 'pipe', 'inherit'] });
    const lines = readline.createInterface({ input: server.stdout! });
    const it = lines[Symbol.asyncIterator]();
    const port = JSON.parse((await it.next()).value).port;
    const client = spawn(exe, ['connect', '127.0.0.1', String(port), String(k), String(bytes)], { stdio: ['ignore', 'pipe', 'inherit'] });
    const cl = readline.createInterface({ input: client.stdout! })[Symbol.asyncIterator]();
    const a = JSON.parse((await cl.next()).value).bytesPerSecond;
    const b = JSON.parse((await it.next()).value).bytesPerSecond;
    runs.push(Math.min(a, b));
  }
  return median(runs);
}

async function main() {
  const rows: any[] = [];
  const raw: Record<number, number> = {};
  for (const k of connectionCounts) {
    raw[k] = await rawTcp(k, 1 << 30);
    console.log(`raw loopback TCP, K=${k}, both directions at once: ${(raw[k] / 1e9).toFixed(2)} GB/s per direction`);
  }
  for (const k of connectionCounts) {
    for (const n of peerCounts) {
      const peers = await startRing(n, { env: { TCCL_TEST_CONNECTIONS: String(k) } });
      try {
        for (const size of sizes) {
          const count = size / 4;
          const its = size >= 256 << 20 ? Math.min(iters, quick ? 3 : 10) : iters;
          const warmup = size >= 64 << 20 ? 1 : 3;
          const replies = await Promise.all(
            peers.map((p) => p.request({ cmd: 'bench', bench: { dtype: 'float32', count, iters: its, warmup } }, 600_000)),
          );
          // Every peer finishes each all-reduce at about the same time; take the slowest peer's median.
          const ms = Math.max(...replies.map((r) => median(r.times)));
          const algbw = size / (ms / 1e3);
          const busbw = (algbw * 2 * (n - 1)) / n;
          const row = {
            peers: n, connections: k, bytes: size, iters: its, medianMs: ms, algbwGBs: algbw / 1e9, busbwGBs: busbw / 1e9,
            rawTcpGBs: raw[k] / 1e9, busbwOfRaw: busbw / raw[k],
            loopDelayMaxMs: Math.max(...replies.map((r) => r.loopDelayMaxMs)),
            loopDelayP99Ms: Math.max(...replies.map((r) => r.loopDelayP99Ms)),
          };
          rows.push(row);
          console.log(
            `N=${n} K=${k} ${fmtBytes(size).padStart(8)}: ${ms.toFixed(3).padStart(9)} ms  algbw ${row.algbwGBs.toFixed(3)} GB/s  ` +
              `busbw ${row.busbwGBs.toFixed(3)} GB/s = ${(row.busbwOfRaw * 100).toFixed(0)}% of raw TCP  ` +
              `event-loop delay p99 ${row.loopDelayP99Ms.toFixed(1)} ms, max ${row.loopDelayMaxMs.toFixed(1)} ms`,
          );
        }
      } finally {
        await stopAll(peers);
      }
    }
  }
  const file = writeResult(quick ? 'allreduce-quick' : 'allreduce', { machine: machineInfo(), iters, rows, rawTcpBytesPerSecond: raw });
  console.log(`wrote ${file}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
