// The all-reduce rate of a group of three engine peers without and with a flood of half-open connections on one
// member's data port (test/fixtures/flooder.ts), with that member's peak threads and descriptors. One JSON line.
//   node --import tsx bench/security/flood.ts [--connections 20000] [--seconds 10] [--size 16384]
// Linux only (prlimit, /proc, 127.77.x.y source addresses); the flooders need 11,000 descriptors each.
import { parseArgs } from 'node:util';
import { PeerProcess } from '../../test/harness/process';
import { configure, PeerHandle, startPeer, stopAll } from '../../test/helpers/ring';
import { floodSkipReason, hardFdLimit, sampleProcess, setFdLimit, watchProcess } from '../../test/security/limits';

const { values } = parseArgs({ options: { connections: { type: 'string' }, seconds: { type: 'string' }, size: { type: 'string' } } });
const CONNECTIONS = Number(values.connections ?? 20_000);
const SECONDS = Number(values.seconds ?? 10);
const SIZE = Number(values.size ?? 16_384);
const FLOODERS = Math.max(1, Math.ceil(CONNECTIONS / 10_000));

async function rate(peers: PeerHandle[], seconds: number): Promise<number> {
  const t0 = performance.now();
  let ops = 0;
  while (performance.now() - t0 < seconds * 1000) {
    const rs = (await Promise.all(peers.map((p) => p.request({ cmd: 'repeat', count: 10, size: SIZE }, 120_000)))) as any[];
    ops += Math.min(...rs.map((r) => r.done));
  }
  return ops / ((performance.now() - t0) / 1000);
}

async function main() {
  const skip = floodSkipReason(Math.ceil(CONNECTIONS / FLOODERS) + 1000);
  if (skip) throw new Error(`cannot run: ${skip}`);
  const peers = await Promise.all([0, 1, 2].map((i) => startPeer(i)));
  const flooders: PeerProcess[] = [];
  try {
    await configure(peers, { token: 'bench' });
    const target = peers[0];
    setFdLimit(target.pid, hardFdLimit());
    await rate(peers, 1);
    const baseline = sampleProcess(target.pid);
    const calm = await rate(peers, SECONDS);
    for (let i = 0; i < FLOODERS; i++) flooders.push(new PeerProcess('test/fixtures/flooder.ts'));
    for (const f of flooders) {
      await f.ready;
      setFdLimit(f.pid, Math.ceil(CONNECTIONS / FLOODERS) + 1000);
    }
    const watch = watchProcess(target.pid);
    const flood = Promise.all(
      flooders.map((f, i) =>
        f.request('flood', { port: target.port, count: Math.ceil(CONNECTIONS / FLOODERS), ms: (SECONDS + 4) * 1000, sources: 50, sourceBase: 50 * i }, (SECONDS + 60) * 1000),
      ),
    );
    await new Promise((r) => setTimeout(r, 2000));
    const flooded = await rate(peers, SECONDS);
    const floodStats = (await flood) as any[];
    watch.stop();
    const stats = (await target.request({ cmd: 'stats' })).stats;
    console.log(
      JSON.stringify({
        connections: CONNECTIONS, seconds: SECONDS, bytes: SIZE * 4, allReducesPerSecond: { calm: Math.round(calm), flooded: Math.round(flooded) },
        fraction: Number((flooded / calm).toFixed(2)), target: { baseline, peak: { threads: watch.peak.threads, fds: watch.peak.fds } },
        flooderConnects: floodStats.reduce((s, f) => s + f.connects, 0), engine: stats,
      }),
    );
  } finally {
    await Promise.all(flooders.map((f) => f.stop()));
    await stopAll(peers);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
