// One process of the multi-process GPU check (test/gpu/check.ts), started through test/harness/process.ts:
// prints { ev: 'ready', port }; the command `run { rank, peers, steps, count, device, nccl?: { id, size } }`
// all-reduces device buffers over the TCP ring, printing one { ev: 'step' } per result (and one { ev: 'nccl' }).
// Inputs are exact small integers, so sums are exact and comparable across paths.
import { Engine } from '../../lib/engine';
import { RingGroup } from '../../lib/group';
import { DeviceBuffer, NcclCommunicator, allReduceDevice } from '../../lib/device';
import { native } from '../../lib/binding';
import { say, serve } from '../harness/runner';

const engine = Engine.create({ host: '127.0.0.1', port: 0, connections: 4 });
serve({ run: (c) => main(c as Parameters<typeof main>[0]) }, { onExit: () => engine.close() });
say({ ev: 'ready', port: engine.port });

function input(rank: number, step: number, n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = ((i * 7 + rank * 13 + step) % 1000) - 500 + 0.25 * rank;
  return a;
}

async function main(c: { rank: number; peers: string[]; steps: number; count: number; device: number; nccl?: { id: number[]; size: number } }) {
  const group = RingGroup.fromEngine(engine, c.rank, c.peers);
  for (let step = 0; step < c.steps; step++) {
    const host = input(c.rank, step, c.count);
    const dev = await DeviceBuffer.from(host, { device: c.device });
    const inHash = await dev.contentHash();
    try {
      const t0 = performance.now();
      const r = await allReduceDevice(group, dev, { op: 'sum', tag: 2 * step, timeoutMs: 10_000 });
      const ms = performance.now() - t0;
      const fromDevice = (await dev.toArray()) as Float32Array;
      const ref = host.slice();
      await group.allReduce(ref, { op: 'sum', tag: 2 * step + 1, timeoutMs: 10_000 });
      const same = Buffer.compare(Buffer.from(fromDevice.buffer), Buffer.from(ref.buffer)) === 0;
      say({ ev: 'step', step, ok: true, worldSize: r.worldSize, same, hash: native().contentHashSync(fromDevice), gpuHash: await dev.contentHash(), ms });
    } catch (err) {
      const e = err as Error & { code?: string };
      const after = await dev.contentHash();
      say({ ev: 'step', step, ok: false, name: e.name, code: e.code, message: e.message, inputKept: after === inHash });
      break;
    } finally {
      dev.free();
    }
  }
  if (c.nccl) {
    try {
      const comm = await NcclCommunicator.init(Uint8Array.from(c.nccl.id), c.nccl.size, c.rank, c.device);
      const buf = await DeviceBuffer.from(new Float32Array(1024).fill(c.rank + 1), { device: c.device });
      await comm.allReduce(buf);
      const v = (await buf.toArray()) as Float32Array;
      say({ ev: 'nccl', nccl: true, ok: true, first: v[0], last: v[1023] });
      buf.free();
      await comm.destroy();
    } catch (err) {
      say({ ev: 'nccl', nccl: true, ok: false, message: String(err) });
    }
  }
}
