// One rank of bench/gpu/run.ts, started through test/harness/process.ts: prints { ev: 'ready', port }; the
// command `run { rank, peers, sizesMB, iters }` times host-buffer and device-buffer (staged) all-reduce of
// float32 for each size; rank 0 prints one { ev: 'result' } per measurement.
import { Engine } from '../../lib/engine';
import { RingGroup } from '../../lib/group';
import { DeviceBuffer, allReduceDevice } from '../../lib/device';
import { say, serve } from '../../test/harness/runner';

const engine = Engine.create({ host: '127.0.0.1', port: 0, connections: 8 });

serve({
  run: async (c) => {
    const g = RingGroup.fromEngine(engine, c.rank, c.peers);
    let tag = 0;
    for (const mb of c.sizesMB as number[]) {
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
        if (c.rank === 0) say({ ev: 'result', bench: 'allreduce', kind, mb, ms: best, GBs: (mb / 1024) / (best / 1000) });
      }
      dev.free();
    }
  },
}, { onExit: () => engine.close() });
say({ ev: 'ready', port: engine.port });
