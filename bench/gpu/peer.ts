// One rank of bench/gpu/run.ts: prints {"port"}, reads {rank, peers, sizesMB, iters}, then times host-buffer and
// device-buffer (staged) all-reduce of float32 for each size; rank 0 prints JSON lines and finally "done".
import * as readline from 'node:readline';
import { Engine } from '../../lib/engine';
import { RingGroup } from '../../lib/group';
import { DeviceBuffer, allReduceDevice } from '../../lib/device';

const engine = Engine.create({ host: '127.0.0.1', port: 0, connections: 8 });
process.stdout.write(JSON.stringify({ port: engine.port }) + '\n');
readline.createInterface({ input: process.stdin }).once('line', (l) => void main(JSON.parse(l)));

async function main(c: { rank: number; peers: string[]; sizesMB: number[]; iters: number }): Promise<void> {
  const g = RingGroup.fromEngine(engine, c.rank, c.peers);
  let tag = 0;
  for (const mb of c.sizesMB) {
    const host = new Float32Array((mb << 20) / 4).fill(1);
    const dev = await DeviceBuffer.from(host);
    for (const kind of ['host', 'device'] as const) {
      let best = Infinity;
      for (let i = 0; i < c.iters + 1; i++) {
        const t0 = performance.now();
        if (kind === 'host') await g.allReduce(host, { tag: tag++ });
        else await allReduceDevice(g, dev, { tag: tag++ });
        if (i > 0) best = Math.min(best, performance.now() - t0);
      }
      if (c.rank === 0) process.stdout.write(JSON.stringify({ bench: 'allreduce', kind, mb, ms: best, GBs: (mb / 1024) / (best / 1000) }) + '\n');
    }
    dev.free();
  }
  if (c.rank === 0) process.stdout.write('done\n');
  await engine.close();
}
