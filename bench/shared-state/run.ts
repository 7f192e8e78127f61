// npm run bench:shared-state [-- --quick]: a joiner receiving 64 MiB and 512 MiB of shared state from 1 and from
// 3 up-to-date peers (real processes on loopback, static groups driven by the plan executor), against raw
// one-direction loopback TCP measured in the same run; plus content-hash throughput per core.
import { spawn } from 'node:child_process';
import { native } from '../../lib/binding';
import { buildHelper, machineInfo, median, parseArgs, writeResult } from '../common';
import { collectReports, formGroup, startStatePeers, stopStatePeers, syncOnce } from '../../test/helpers/state';
import type { EntrySpec } from '../../test/helpers/state';

const MiB = 1 << 20;
const args = parseArgs(process.argv.slice(2));
const quick = Boolean(args.quick);
const K = Number(args.connections ?? 8);

function hashing(bytes: number) {
  const buf = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i += 4096) buf[i] = i & 0xff;
  const best = (f: () => void) => {
    let b = Infinity;
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      f();
      b = Math.min(b, performance.now() - t0);
    }
    return b;
  };
  const oneCore = bytes / (best(() => native().contentHashSync(buf)) / 1e3) / 1e9;
  return { bytes, gbPerSecondOneCore: oneCore };
}

async function hashingParallel(bytes: number) {
  const buf = new Uint8Array(bytes);
  let b = Infinity;
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    await native().contentHash(buf);
    b = Math.min(b, performance.now() - t0);
  }
  return bytes / (b / 1e3) / 1e9;
}

async function rawTcp(bytes: number): Promise<number> {
  const exe = buildHelper('rawtcp', ['bench/allreduce/rawtcp.cpp', 'native/core/socket.cpp']);
  const recv = spawn(exe, ['serve', '0', String(K), String(bytes), 'oneway'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  let onPort!: (p: number) => void;
  const port = new Promise<number>((r) => (onPort = r));
  recv.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    const m = /\{"port":(\d+)\}\n/.exec(out);
    if (m) onPort(Number(m[1]));
  });
  const recvDone = new Promise<number | null>((r) => recv.on('exit', r));
  const send = spawn(exe, ['connect', '127.0.0.1', String(await port), String(K), String(bytes), 'oneway'], { stdio: ['ignore', 'ignore', 'inherit'] });
  const [rc] = await Promise.all([recvDone, new Promise((r) => send.on('exit', r))]);
  const m = /"bytesPerSecond":(\d+)/.exec(out);
  if (rc !== 0 || !m) throw new Error(`rawtcp failed (exit ${rc}): ${out}`);
  return Number(m[1]);
}

async function joinCase(totalBytes: number, sources: number, iters: number) {
  const peers = await startStatePeers(sources + 1, { TCCL_TEST_CONNECTIONS: String(K) });
  try {
    await formGroup(peers);
    const per = totalBytes / 4 / 4;
    const entries: EntrySpec[] = [0, 1, 2, 3].map((i) => ({ key: `layer${i}`, dtype: 'float32', length: per, seed: 10 + i }));
    const joiner = peers[sources];
    await Promise.all(peers.slice(0, sources).map((p) => p.request({ cmd: 'make', entries, revision: 1 }, 120_000)));
    await joiner.request({ cmd: 'make', entries: entries.map((e) => ({ ...e, seed: 0 })), revision: 0 }, 120_000);
    const runs = [];
    for (let i = 0; i < iters; i++) {
      const reports = await collectReports(peers, { [joiner.id]: 'receiveOnly' });
      const { replies } = await syncOnce(peers, reports, { tag: 1000 + 10 * i, timeoutMs: 60_000 });
      const r = replies[joiner.id];
      if (!r.ok) throw new Error(`sync failed: ${r.message}`);
      if (r.result.bytesReceived !== totalBytes) throw new Error(`received ${r.result.bytesReceived} bytes, expected ${totalBytes}`);
      if (JSON.stringify(r.after) !== JSON.stringify(replies[peers[0].id].after)) throw new Error('hash mismatch after sync');
      runs.push({ totalMs: r.ms, ...r.result.timings });
      // Drift every entry by one byte, so the next iteration moves everything again.
      await joiner.request({ cmd: 'alter', alter: entries.map((e) => ({ key: e.key, index: i + 1 })) });
    }
    return runs;
  } finally {
    await stopStatePeers(peers);
  }
}

async function main() {
  const hashBytesN = (quick ? 64 : 256) * MiB;
  const h = hashing(hashBytesN);
  const par = await hashingParallel(hashBytesN);
  console.log(`contentHash: ${h.gbPerSecondOneCore.toFixed(2)} GB/s on one core, ${par.toFixed(2)} GB/s with 2 threads`);
  const raw = await rawTcp((quick ? 256 : 1024) * MiB);
  console.log(`raw loopback TCP, one direction, K=${K}: ${(raw / 1e9).toFixed(2)} GB/s`);
  const sizes = quick ? [64] : [64, 512];
  const rows = [];
  for (const mib of sizes) {
    for (const sources of [1, 3]) {
      const iters = quick ? 2 : mib >= 512 ? 3 : 5;
      const runs = await joinCase(mib * MiB, sources, iters);
      const bytes = mib * MiB;
      const total = median(runs.map((r) => r.totalMs));
      const transfer = median(runs.map((r) => r.transferMs));
      const row = {
        stateMiB: mib, sources, connections: K, iters,
        seconds: total / 1e3,
        transferSeconds: transfer / 1e3,
        verifyMs: median(runs.map((r) => r.verifyMs)),
        commitMs: median(runs.map((r) => r.commitMs)),
        transferGBs: bytes / (transfer / 1e3) / 1e9,
        endToEndGBs: bytes / (total / 1e3) / 1e9,
        transferOfRaw: bytes / (transfer / 1e3) / raw,
        endToEndOfRaw: bytes / (total / 1e3) / raw,
      };
      rows.push(row);
      console.log(
        `${String(mib).padStart(4)} MiB from ${sources} source(s): ${row.seconds.toFixed(3)} s end to end ` +
          `(transfer ${row.transferSeconds.toFixed(3)} s = ${row.transferGBs.toFixed(2)} GB/s = ${(row.transferOfRaw * 100).toFixed(0)}% of raw TCP; ` +
          `verify ${row.verifyMs.toFixed(0)} ms, commit ${row.commitMs.toFixed(0)} ms)`,
      );
    }
  }
  const file = writeResult(quick ? 'shared-state-quick' : 'shared-state', {
    machine: machineInfo(), connections: K, rawTcpBytesPerSecond: raw,
    hashing: { bytes: hashBytesN, gbPerSecondOneCore: h.gbPerSecondOneCore, gbPerSecondTwoThreads: par }, rows,
  });
  console.log(`wrote ${file}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
