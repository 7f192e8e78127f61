/**
 * WAN bench: ring all-reduce over an emulated long fat pipe, on distinct loopback addresses.
 *
 *   npx tsx bench/wan/run.ts [--quick] [--runs N] [--peers 3,4] [--sizes 64,256] [--ks 1,2,4,8,16]
 *                            [--codecs float32,uint8,uint4] [--no-selftest] [--no-topology] [--socket-buffer BYTES]
 *                            [--host-mbps 1000 (0 = no host caps)] [--out bench/results]
 *
 * Every peer listens on its own real address (127.0.20.x) and is reached by the others only through the
 * emulator (test/harness/wan/wanproxy.cpp) at its emulated address (127.0.10.x), one route per ordered pair, so what
 * peer i sends to peer j crosses link i->j: 20 ms one way (40 ms RTT), 100 Mbit/s per TCP connection,
 * 1 Gbit/s per link. Writes bench/results/wan.json and bench/results/wan.svg (wan-quick.* with --quick).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { median, parseArgs } from '../common';
import { Engine } from '../../lib/engine';
import { throughputChart, Series } from './chart';
import { LinkSpec, WanEmulator, WanMesh, WanStats, linkId, realHost } from '../../test/harness/wan/emulator';
import { BlastResult, selfTest } from './selftest';
import { TopologyTimings, timeTopology } from './topology';

type Codec = 'float32' | 'uint8' | 'uint4';
const quantizationFor = (codec: Codec) => (codec === 'float32' ? undefined : ({ codec } as const));

const LINK: LinkSpec = { delayMs: 20, connMbps: 100, aggMbps: 1000 };
/** Every host's uplink and downlink (shared by its links): a mesh algorithm gets no more per host than a ring. */
const HOST_MBPS_DEFAULT = 1000;
const RTT_MS = 2 * LINK.delayMs;

interface Args {
  quick: boolean;
  runs: number;
  peers: number[];
  sizesMiB: number[];
  ks: number[];
  codecs: Codec[];
  selftest: boolean;
  topology: boolean;
  out: string;
  /** Every host's uplink/downlink cap, Mbit/s (0 = none). */
  hostMbps: number;
  /** Engine socketBufferBytes (SO_SNDBUF/SO_RCVBUF per connection); undefined = the engine's default. */
  socketBufferBytes?: number;
  /** A configuration whose first run takes longer than this is not repeated. */
  repeatBelowS: number;
}

const FLAGS = ['quick', 'runs', 'peers', 'sizes', 'ks', 'codecs', 'no-selftest', 'host-mbps', 'socket-buffer', 'no-topology', 'out'];

function parseRunArgs(argv: string[]): Args {
  const o = parseArgs(argv);
  for (const k of Object.keys(o)) if (!FLAGS.includes(k)) throw new Error(`unknown argument --${k}`);
  const str = (k: string) => (typeof o[k] === 'string' ? (o[k] as string) : undefined);
  const list = (k: string, d: number[]) => str(k)?.split(',').map(Number) ?? d;
  const quick = o.quick === true;
  return {
    quick,
    runs: Number(str('runs') ?? (quick ? 1 : 3)),
    peers: list('peers', [3, 4]),
    sizesMiB: list('sizes', quick ? [64] : [64, 256]),
    ks: list('ks', quick ? [1, 4, 16] : [1, 2, 4, 8, 16]),
    codecs: (str('codecs')?.split(',') ?? ['float32', 'uint8', 'uint4']) as Args['codecs'],
    selftest: o['no-selftest'] !== true,
    topology: o['no-topology'] !== true,
    hostMbps: Number(str('host-mbps') ?? HOST_MBPS_DEFAULT),
    socketBufferBytes: str('socket-buffer') === undefined ? undefined : Number(str('socket-buffer')),
    out: str('out') ?? path.join(__dirname, '..', 'results'),
    repeatBelowS: 8,
  };
}

export interface AllReduceRow {
  peers: number;
  k: number;
  sizeMiB: number;
  codec: Codec;
  runs: number;
  /** Median wall time of one all-reduce, seconds. */
  seconds: number;
  secondsAll: number[];
  /** Bytes the busiest host sent over the emulator (all its links), median run. */
  wireBytes: number;
  /** Wire bus bandwidth: the busiest host's egress over the emulator / seconds, Mbit/s (a ring uses one link). */
  busMbps: number;
  /** busMbps / aggregate cap of a link (= of a host's uplink). */
  fractionOfAggregate: number;
  /** Busiest single link / seconds, Mbit/s. */
  busiestLinkMbps: number;
  /** Links that carried more than 1 MB in the median run. */
  linksUsed: number;
  /** Bus bandwidth counted in float32 bytes (2(n-1)/n x size / seconds), Mbit/s: the figure a user sees. */
  float32EquivalentMbps: number;
  /** Emulator CPU (fraction of one core) during the runs. */
  emulatorCpu: number;
  correct: boolean;
}

export interface SmallRow {
  peers: number;
  k: number;
  codec: Codec;
  bytes: number;
  medianMs: number;
  rtts: number;
  samplesMs: number[];
}

async function emuCpuMs(emu: WanEmulator): Promise<number> {
  const s: WanStats = await emu.stats();
  return s.utimeMs + s.stimeMs;
}

async function linkBytes(emu: WanEmulator): Promise<Record<string, number>> {
  const s = await emu.stats();
  return Object.fromEntries(Object.entries(s.links).map(([id, l]) => [id, l.bytes]));
}

/** Per-host egress and per-link bytes between two stats snapshots of an n-host mesh. */
function traffic(before: Record<string, number>, after: Record<string, number>, n: number) {
  let hostMax = 0;
  let linkMax = 0;
  let used = 0;
  for (let s = 0; s < n; s++) {
    let host = 0;
    for (let d = 0; d < n; d++) {
      if (s === d) continue;
      const id = String(linkId(s, d, n));
      const b = (after[id] ?? 0) - (before[id] ?? 0);
      host += b;
      linkMax = Math.max(linkMax, b);
      if (b > 1e6) used++;
    }
    hostMax = Math.max(hostMax, host);
  }
  return { hostMax, linkMax, used };
}

/** Draws the SVG of throughput against K from the all-reduce rows. */
function writeChart(file: string, rows: AllReduceRow[], args: Args): void {
  const series: Series[] = [];
  for (const n of args.peers)
    for (const sizeMiB of args.sizesMiB)
      for (const codec of args.codecs) {
        const pts = rows
          .filter((r) => r.peers === n && r.sizeMiB === sizeMiB && r.codec === codec)
          .map((r) => ({ k: r.k, mbps: r.busMbps }));
        if (pts.length) series.push({ label: `${n} peers, ${sizeMiB} MiB, ${codec === 'float32' ? 'float32 (ring)' : `${codec} (mesh)`}`, points: pts, dashed: codec !== 'float32' });
      }
  fs.writeFileSync(
    file,
    throughputChart(series, {
      title: 'TCCL all-reduce over an emulated WAN: bytes on the wire per host',
      subtitle: `${RTT_MS} ms RTT, ${LINK.connMbps} Mbit/s per TCP connection, ${LINK.aggMbps} Mbit/s per link${args.hostMbps > 0 ? ` and ${args.hostMbps} per host` : ''}; one all-reduce, median of up to ${args.runs} runs`,
      ks: args.ks,
      connMbps: LINK.connMbps!,
      aggMbps: LINK.aggMbps!,
    }),
  );
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--redraw') {
    // Redraws the chart from a results file: --redraw bench/results/wan.json
    const r = JSON.parse(fs.readFileSync(argv[1], 'utf8')) as { args: Args; allReduce: AllReduceRow[] };
    writeChart(argv[1].replace(/\.json$/, '.svg'), r.allReduce, r.args);
    return;
  }
  const args = parseRunArgs(argv);
  const started = Date.now();
  const log = (s: string) => console.log(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)}s] ${s}`);
  const notes: string[] = [];
  let emulator: BlastResult[] = [];
  if (args.selftest) {
    log('emulator self-test (bulk C++ traffic, no TCCL):');
    emulator = await selfTest(args.quick ? 1.5 : 2.5, (s) => log('  ' + s));
  }

  const emu = await WanEmulator.start();
  const rows: AllReduceRow[] = [];
  const small: SmallRow[] = [];
  const topology: TopologyTimings[] = [];
  let tag = 1;
  try {
    for (const n of args.peers) {
      const maxElems = (Math.max(...args.sizesMiB) << 20) / 4;
      const bufs = Array.from({ length: n }, () => new Float32Array(maxElems));
      for (const k of args.ks) {
        const engines = Array.from({ length: n }, (_, i) => Engine.create({ host: realHost(i), connections: k, socketBufferBytes: args.socketBufferBytes }));
        const mesh = await WanMesh.create(
          emu,
          engines.map((e, i) => ({ host: realHost(i), port: e.port })),
          LINK,
          { hostMbps: args.hostMbps > 0 ? args.hostMbps : undefined },
        );
        try {
          engines.forEach((e, i) =>
            e.configure(1, i, mesh.addresses[i].map((a, j) => ({ id: `peer-${j}@${a.host}`, host: a.host, port: a.port }))),
          );
          // Warm-up: opens the K connections of every link.
          await Promise.all(engines.map((e, i) => e.allReduce(bufs[i].subarray(0, 1024), { tag: tag, timeoutMs: 60_000 })));
          tag++;
          // Small all-reduce latency: 4 KiB (1024 float32), plain and quantized.
          for (const codec of args.codecs) {
            const quantization = quantizationFor(codec);
            const samples: number[] = [];
            for (let r = 0; r < 5; r++) {
              bufs.forEach((b, i) => b.subarray(0, 1024).fill(i + 1));
              const t0 = performance.now();
              await Promise.all(engines.map((e, i) => e.allReduce(bufs[i].subarray(0, 1024), { tag: tag, timeoutMs: 60_000, quantization })));
              samples.push(performance.now() - t0);
              tag++;
            }
            const sm: SmallRow = { peers: n, k, codec, bytes: 4096, medianMs: median(samples), rtts: median(samples) / RTT_MS, samplesMs: samples };
            small.push(sm);
            log(`n=${n} K=${String(k).padStart(2)} 4 KiB all-reduce ${codec.padEnd(7)}: ${sm.medianMs.toFixed(1)} ms = ${sm.rtts.toFixed(2)} RTT`);
          }

          for (const sizeMiB of args.sizesMiB) {
            const elems = (sizeMiB << 20) / 4;
            for (const codec of args.codecs) {
              const quantization = quantizationFor(codec);
              const times: number[] = [];
              const wires: Array<ReturnType<typeof traffic>> = [];
              let correct = true;
              const cpu0 = await emuCpuMs(emu);
              let busy = 0;
              for (let r = 0; r < args.runs; r++) {
                const views = bufs.map((b, i) => {
                  const v = b.subarray(0, elems);
                  v.fill(i + 1);
                  return v;
                });
                const lb0 = await linkBytes(emu);
                const t0 = performance.now();
                try {
                  await Promise.all(engines.map((e, i) => e.allReduce(views[i], { tag, timeoutMs: 300_000, quantization })));
                } finally {
                  tag++;
                }
                const secs = (performance.now() - t0) / 1000;
                busy += secs;
                times.push(secs);
                wires.push(traffic(lb0, await linkBytes(emu), n));
                const want = (n * (n + 1)) / 2;
                const tol = codec === 'uint8' ? want * 0.02 : codec === 'uint4' ? want * 0.1 : 0;
                for (const v of views) {
                  for (const idx of [0, elems >> 1, elems - 1]) if (Math.abs(v[idx] - want) > tol) correct = false;
                }
                if (secs > args.repeatBelowS) break; // long configurations: one run (keeps the bench within ~10 min)
              }
              if (times.length === 0) continue;
              const cpu1 = await emuCpuMs(emu);
              const secs = median(times);
              const mid = times.indexOf([...times].sort((x, y) => x - y)[Math.floor(times.length / 2)]);
              const wire = wires[mid].hostMax;
              const row: AllReduceRow = {
                peers: n,
                k,
                sizeMiB,
                codec,
                runs: times.length,
                seconds: secs,
                secondsAll: times,
                wireBytes: wire,
                busMbps: (wire * 8) / secs / 1e6,
                fractionOfAggregate: (wire * 8) / secs / 1e6 / LINK.aggMbps!,
                busiestLinkMbps: (wires[mid].linkMax * 8) / secs / 1e6,
                linksUsed: wires[mid].used,
                float32EquivalentMbps: ((2 * (n - 1)) / n) * (sizeMiB << 20) * 8 / secs / 1e6,
                emulatorCpu: (cpu1 - cpu0) / 1000 / busy,
                correct,
              };
              rows.push(row);
              log(
                `n=${n} K=${String(k).padStart(2)} ${String(sizeMiB).padStart(3)} MiB ${codec.padEnd(7)} ` +
                  `${secs.toFixed(2).padStart(6)} s  bus ${row.busMbps.toFixed(0).padStart(4)} Mbit/s = ` +
                  `${(row.fractionOfAggregate * 100).toFixed(0).padStart(3)}% of the aggregate cap` +
                  (codec !== 'float32' ? ` (${row.float32EquivalentMbps.toFixed(0)} Mbit/s float32-equivalent)` : '') +
                  `  links used ${row.linksUsed}  emulator CPU ${(row.emulatorCpu * 100).toFixed(0)}%  runs ${times.length}${correct ? '' : '  WRONG RESULT'}`,
              );
            }
          }
        } finally {
          await Promise.all(engines.map((e) => e.close()));
          await mesh.close();
        }
      }
    }
    if (args.topology) {
      for (const n of args.peers) {
        try {
          const tt = await timeTopology(emu, n, LINK);
          topology.push(tt);
          log(
            `n=${n} updateTopology: join ${tt.joinMs.map((j) => `${j.ms.toFixed(0)} ms`).join(', ')} ` +
              `(${tt.joinMs.map((j) => (j.ms / RTT_MS).toFixed(1)).join(', ')} RTT); barrier ${tt.barrierMs.toFixed(0)} ms ` +
              `(${(tt.barrierMs / RTT_MS).toFixed(1)} RTT); Communicator 4 KiB all-reduce ${tt.allReduce4KiBMs.toFixed(0)} ms ` +
              `(${(tt.allReduce4KiBMs / RTT_MS).toFixed(1)} RTT)`,
          );
        } catch (err) {
          notes.push(`updateTopology timing failed for ${n} peers: ${(err as Error).message}`);
          log(`n=${n} updateTopology timing failed: ${(err as Error).message}`);
        }
      }
    }
  } finally {
    await emu.close();
  }

  const result = {
    bench: 'wan',
    date: new Date().toISOString(),
    machine: { loadAvgAtEnd: os.loadavg(), cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, node: process.version, platform: process.platform },
    link: { ...LINK, rttMs: RTT_MS, hostUplinkMbps: args.hostMbps, hostDownlinkMbps: args.hostMbps },
    args,
    notes,
    emulator,
    allReduce: rows,
    small,
    topology,
    durationS: (Date.now() - started) / 1000,
  };
  fs.mkdirSync(args.out, { recursive: true });
  const base = args.quick ? 'wan-quick' : 'wan'; // a quick run never overwrites the full results
  fs.writeFileSync(path.join(args.out, `${base}.json`), JSON.stringify(result, null, 2) + '\n');
  writeChart(path.join(args.out, `${base}.svg`), rows, args);
  log(`wrote ${path.join(args.out, base)}.json and .svg in ${result.durationS.toFixed(0)} s`);
  if (rows.some((r) => !r.correct)) {
    console.error('some all-reduce results were wrong');
    process.exitCode = 1;
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
