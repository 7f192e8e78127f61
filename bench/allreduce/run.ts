// npm run bench: all-reduce of 2, 3 and 4 peer processes on loopback, against raw loopback TCP measured in the same
// run: N raw processes in a ring with the same K (each streams to its right neighbour over K connections while it
// receives from its left one), i.e. the same processes, connections and directions as the ring all-reduce but no
// collective work. Per row: time, bus bandwidth and its ratio to raw, CPU seconds (user + system, every peer
// process) per GB reduced and per GB sent against raw TCP's per GB sent, threads per peer process, and the
// event-loop delay seen by the peers. Writes bench/results/allreduce.json (allreduce-quick.json with --quick).
//   node --import tsx bench/allreduce/run.ts [--quick] [--peers 2,3,4] [--connections 1,8] [--iters 10] [--sizes 4096,1048576]
import { spawn } from 'node:child_process';
import * as readline from 'node:readline';
import { buildHelper, fmtBytes, machineInfo, median, parseArgs, writeResult } from '../common';
import { startRing, stopAll } from '../../test/helpers/ring';
import { progress } from '../progress';

const args = parseArgs(process.argv.slice(2));
const quick = Boolean(args.quick);
const peerCounts = String(args.peers ?? '2,3,4').split(',').map(Number);
const connectionCounts = String(args.connections ?? (quick ? '8' : '1,4,8')).split(',').map(Number);
const iters = Number(args.iters ?? (quick ? 5 : 10));
const sizes = args.sizes
  ? String(args.sizes).split(',').map(Number)
  : quick ? [4 << 10, 1 << 20, 64 << 20] : [4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20, 256 << 20];

interface RawRing {
  /** Bytes per second each process sends (and receives), the slowest process's. */
  bytesPerSecond: number;
  /** CPU seconds of all processes together per GB that one process sends. */
  cpuSecondsPerGBSent: number;
}

/** N raw TCP processes in a ring, K connections per link, each streaming `bytes` right while receiving from the left. */
async function rawRing(n: number, k: number, bytes: number): Promise<RawRing> {
  const exe = buildHelper('rawtcp', ['bench/allreduce/rawtcp.cpp', 'native/core/socket.cpp']);
  const runs: RawRing[] = [];
  for (let r = 0; r < 3; r++) {
    const procs = Array.from({ length: n }, () => spawn(exe, ['ring', String(k), String(bytes)], { stdio: ['pipe', 'pipe', 'inherit'] }));
    const lines = procs.map((p) => readline.createInterface({ input: p.stdout! })[Symbol.asyncIterator]());
    const ports = await Promise.all(lines.map(async (it) => JSON.parse((await it.next()).value).port as number));
    procs.forEach((p, i) => p.stdin!.end(`${ports[(i + 1) % n]}\n`));
    const results = await Promise.all(lines.map(async (it) => JSON.parse((await it.next()).value) as { bytesPerSecond: number; cpuSeconds: number }));
    const cpu = results.reduce((a, x) => a + x.cpuSeconds, 0);
    runs.push({ bytesPerSecond: Math.min(...results.map((x) => x.bytesPerSecond)), cpuSecondsPerGBSent: cpu / (bytes / 1e9) });
  }
  const mid = [...runs].sort((a, b) => a.bytesPerSecond - b.bytesPerSecond)[runs.length >> 1];
  return mid;
}

async function main() {
  const rows: any[] = [];
  const raw: Record<string, RawRing> = {};
  for (const k of connectionCounts) {
    for (const n of peerCounts) {
      raw[`${n}/${k}`] = await rawRing(n, k, 1 << 30);
      const r = raw[`${n}/${k}`];
      console.log(`raw loopback TCP ring, N=${n} K=${k}: ${(r.bytesPerSecond / 1e9).toFixed(2)} GB/s per process each way, ${r.cpuSecondsPerGBSent.toFixed(2)} CPU s per GB sent`);
    }
  }
  const bar = progress(connectionCounts.length * peerCounts.length * sizes.length, 'rows');
  for (const k of connectionCounts) {
    for (const n of peerCounts) {
      const ref = raw[`${n}/${k}`];
      const peers = await startRing(n, { env: { TCCL_TEST_CONNECTIONS: String(k) } });
      try {
        for (const size of sizes) {
          const count = size / 4;
          const its = size >= 256 << 20 ? Math.min(iters, quick ? 3 : 10) : size <= 64 << 10 ? Math.max(iters, 200) : iters;
          const warmup = size >= 64 << 20 ? 1 : 3;
          const replies = await Promise.all(
            peers.map((p) => p.request({ cmd: 'bench', bench: { dtype: 'float32', count, iters: its, warmup } }, 600_000)),
          );
          // Every peer finishes each all-reduce at about the same time; take the slowest peer's median.
          const ms = Math.max(...replies.map((r) => median(r.times)));
          const algbw = size / (ms / 1e3);
          const busbw = (algbw * 2 * (n - 1)) / n;
          const cpu = replies.reduce((a, r) => a + r.cpuSeconds, 0);
          const sentPerPeer = ((2 * (n - 1)) / n) * size * its;
          const row = {
            peers: n, connections: k, bytes: size, iters: its, medianMs: ms, algbwGBs: algbw / 1e9, busbwGBs: busbw / 1e9,
            rawTcpGBs: ref.bytesPerSecond / 1e9, busbwOfRaw: busbw / ref.bytesPerSecond,
            cpuSecondsPerGBReduced: cpu / ((size * its) / 1e9),
            cpuSecondsPerGBSent: cpu / (sentPerPeer / 1e9),
            rawCpuSecondsPerGBSent: ref.cpuSecondsPerGBSent,
            threadsPerPeer: Math.max(...replies.map((r) => r.threads ?? 0)) || undefined,
            loopDelayMaxMs: Math.max(...replies.map((r) => r.loopDelayMaxMs)),
            loopDelayP99Ms: Math.max(...replies.map((r) => r.loopDelayP99Ms)),
          };
          rows.push(row);
          bar.update(rows.length, `N=${n} K=${k} ${fmtBytes(size)}`);
          const speed = size <= 64 << 10 ? `${ms.toFixed(3)} ms` : `busbw ${row.busbwGBs.toFixed(2)} GB/s = ${(row.busbwOfRaw * 100).toFixed(0)}% of raw`;
          bar.log(
            `N=${n} K=${k} ${fmtBytes(size).padStart(8)}: ${speed}  CPU ${row.cpuSecondsPerGBSent.toFixed(2)} s/GB sent (raw ` +
              `${ref.cpuSecondsPerGBSent.toFixed(2)})  ${row.threadsPerPeer ?? '?'} threads/peer  event-loop delay p99 ` +
              `${row.loopDelayP99Ms.toFixed(1)} ms, max ${row.loopDelayMaxMs.toFixed(1)} ms`,
          );
        }
      } finally {
        await stopAll(peers);
      }
    }
  }
  bar.stop();
  const file = writeResult(quick ? 'allreduce-quick' : 'allreduce', { machine: machineInfo(), iters, rows, rawTcpRing: raw });
  console.log(`wrote ${file}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
