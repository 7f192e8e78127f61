/**
 * Two-level all-reduce against the best ring, on the emulated regions of bench/topology/run.ts (a prototype on the
 * data plane's exchange, bench/topology/two-level-peer.ts; not a library feature). The ring is the optimised one
 * (each region contiguous: it crosses between regions once per region); the two-level algorithm gathers each
 * region's buffers on a leader, exchanges the regions' sums between leaders, and sends the total back. A 64 MiB
 * float32 sum, slowest peer's time, median of 3, results checked against the exact sum on every peer.
 *
 * npm run bench:topology:two-level [-- --quick]   (writes bench/results/topology-two-level.json)
 */
import { PeerProcess } from '../../test/harness/process';
import { WanEmulator } from '../../test/harness/wan/emulator';
import { RegionsSpec, regionWan } from '../../test/harness/wan/regions';
import { expectedFirst } from '../../test/helpers/communicator';
import { machineInfo, median, parseArgs, writeResult } from '../common';

const quick = Boolean(parseArgs(process.argv.slice(2)).quick);
const SPEC: RegionsSpec = { inside: { delayMs: 5, aggMbps: 1000 }, between: { delayMs: 40, aggMbps: 200 }, betweenSharedMbps: 200 };
const BYTES = quick ? 16 << 20 : 64 << 20;
const RUNS = quick ? 1 : 3;
const CONFIGS = quick ? [{ peers: 6, regions: 2 }] : [{ peers: 6, regions: 2 }, { peers: 8, regions: 2 }, { peers: 6, regions: 3 }];

async function one(cfg: { peers: number; regions: number }, block: number) {
  const regionOf = [...Array(cfg.peers).keys()].map((i) => i % cfg.regions);
  // The best ring: each region contiguous (what optimizeTopology finds on this setup).
  const order = [...new Set(regionOf)].flatMap((r) => regionOf.map((x, i) => [x, i]).filter(([x]) => x === r).map(([, i]) => i));
  const emu = await WanEmulator.start();
  const procs: PeerProcess[] = [];
  try {
    const hosts = await regionWan(emu, regionOf, SPEC, block);
    for (let i = 0; i < cfg.peers; i++) {
      procs.push(new PeerProcess('bench/topology/two-level-peer.ts', { argv: [JSON.stringify({ ...hosts[i], connections: 4, value: i + 1 })] }));
    }
    await Promise.all(procs.map((p) => p.ready));
    const peers = order.map((i) => `${hosts[i].advertiseAddress}:${hosts[i].dataPort}`);
    await Promise.all(procs.map((p, i) => p.request('configure', { rank: order.indexOf(i), peers }, 30_000)));
    const ringRegion = order.map((i) => regionOf[i]);
    const expected = JSON.stringify(expectedFirst(procs.map((_, i) => i + 1), 0, 4));
    let tag = 10;
    const run = async (cmd: 'ring' | 'twoLevel', n: number) => {
      const rs = await Promise.all(procs.map((p) => p.request(cmd, { n, tag, regionOf: ringRegion }, 600_000)));
      tag += 100; // two-level uses 3 tags per chunk: runs must not share a tag (a member skips the leaders' tags)
      const bad = rs.find((r) => !r.ok);
      if (bad) throw new Error(`${cmd} failed: ${bad.code} ${bad.message}`);
      if (JSON.stringify(rs[0].first) !== expected || !rs.every((r) => r.hash === rs[0].hash)) throw new Error(`${cmd}: wrong or differing results`);
      return { ms: Math.max(...rs.map((r) => Number(r.ms))), hash: String(rs[0].hash) };
    };
    await run('ring', 1 << 18); // dial every link either algorithm uses
    await run('twoLevel', 1 << 18);
    const ring: number[] = [];
    const two: number[] = [];
    const hashes = new Set<string>();
    for (let r = 0; r < RUNS; r++) {
      const a = await run('ring', BYTES / 4);
      const b = await run('twoLevel', BYTES / 4);
      ring.push(a.ms);
      two.push(b.ms);
      hashes.add(a.hash).add(b.hash);
    }
    const n = cfg.peers;
    const result = {
      ...cfg, bytes: BYTES, ringMs: median(ring), ringSamplesMs: ring, twoLevelMs: median(two), twoLevelSamplesMs: two,
      twoLevelSpeedup: median(ring) / median(two), sameBits: hashes.size === 1,
      // Bytes over one direction between two regions: the ring's crossing link carries 2(N-1)/N of the buffer.
      crossingBytesRing: Math.round((2 * (n - 1) / n) * BYTES), crossingBytesTwoLevel: BYTES,
    };
    console.log(
      `${n} peers, ${cfg.regions} regions: best ring ${result.ringMs.toFixed(0)} ms, two-level ${result.twoLevelMs.toFixed(0)} ms ` +
      `(${result.twoLevelSpeedup.toFixed(2)}x; ${(result.crossingBytesRing / 2 ** 20).toFixed(0)} vs ${BYTES / 2 ** 20} MiB per crossing direction)`,
    );
    return result;
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
    await emu.close();
  }
}

async function main(): Promise<void> {
  if (process.platform !== 'linux') throw new Error('needs Linux (the WAN emulator)');
  const results = [];
  let block = 100;
  for (const cfg of CONFIGS) {
    results.push(await one(cfg, block));
    block += 2;
  }
  console.log(`wrote ${writeResult(quick ? 'topology-two-level-quick' : 'topology-two-level', { machine: machineInfo(), quick, spec: SPEC, runs: RUNS, results })}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
