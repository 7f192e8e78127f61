// The WAN bench's K = 16 rows with one process per peer (as in a real run) instead of every engine in the
// bench's own process: float32 against the quantized codecs over the same emulated links (40 ms RTT, 100 Mbit/s
// per connection, 1 Gbit/s per link and per host). Each peer runs back-to-back all-reduces of one buffer
// (test/fixtures/engine-peer.ts `bench`); a row's time is the slowest peer's median.
//   node --import tsx bench/wan/processes.ts [--peers 3,4] [--sizes 64,256] [--codecs float32,uint8,uint4] [--iters 3]
// Writes bench/results/wan-processes.json.
import { machineInfo, median, parseArgs, writeResult } from '../common';
import { startPeer, stopAll, PeerHandle } from '../../test/helpers/ring';
import { WanEmulator, WanMesh, realHost } from '../../test/harness/wan/emulator';

const args = parseArgs(process.argv.slice(2));
const peerCounts = String(args.peers ?? '3,4').split(',').map(Number);
const sizesMiB = String(args.sizes ?? '64,256').split(',').map(Number);
const codecs = String(args.codecs ?? 'float32,uint8,uint4').split(',');
const iters = Number(args.iters ?? 3);
const K = 16;
const LINK = { delayMs: 20, connMbps: 100, aggMbps: 1000 };

interface Row {
  peers: number;
  sizeMiB: number;
  codec: string;
  seconds: number;
  speedupOverFloat32?: number;
  peerMediansS: number[];
}

async function main(): Promise<void> {
  const rows: Row[] = [];
  const emu = await WanEmulator.start();
  try {
    for (const n of peerCounts) {
      const peers: PeerHandle[] = await Promise.all(
        Array.from({ length: n }, (_, i) => startPeer(i, { TCCL_TEST_HOST: realHost(i), TCCL_TEST_CONNECTIONS: String(K) })),
      );
      const mesh = await WanMesh.create(emu, peers.map((p, i) => ({ host: realHost(i), port: p.port })), LINK, { hostMbps: 1000 });
      try {
        await Promise.all(peers.map((p, i) => p.request({ cmd: 'configure', rank: i, peers: mesh.addresses[i].map((a) => `${a.host}:${a.port}`) })));
        for (const sizeMiB of sizesMiB) {
          for (const codec of codecs) {
            const quantization = codec === 'float32' ? undefined : { codec };
            const bench = { dtype: 'float32', count: (sizeMiB << 20) / 4, iters, warmup: 1, quantization };
            const replies = await Promise.all(peers.map((p) => p.request({ cmd: 'bench', bench }, 900_000)));
            const peerMediansS = replies.map((r) => median(r.times as number[]) / 1000);
            const row: Row = { peers: n, sizeMiB, codec, seconds: Math.max(...peerMediansS), peerMediansS };
            const base = rows.find((r) => r.peers === n && r.sizeMiB === sizeMiB && r.codec === 'float32');
            if (base) row.speedupOverFloat32 = base.seconds / row.seconds;
            rows.push(row);
            console.log(`n=${n} K=${K} ${sizeMiB} MiB ${codec.padEnd(7)} ${row.seconds.toFixed(2)} s` +
              (row.speedupOverFloat32 ? ` (${row.speedupOverFloat32.toFixed(1)}x float32)` : ''));
          }
        }
      } finally {
        await mesh.close();
        await stopAll(peers);
      }
    }
  } finally {
    await emu.close();
  }
  console.log(`written ${writeResult('wan-processes', { link: LINK, k: K, iters, rows, machine: machineInfo() })}`);
}

void main();
