// One process of the multi-process GPU check (test/gpu/check.ts): listens, prints {"port"}, reads one JSON line
// {rank, peers, steps, count, nccl?: {id, size}} and then all-reduces device buffers over the TCP ring, printing one
// JSON line per result. Inputs are exact small integers, so sums are exact and comparable across paths.
import * as readline from 'node:readline';
import { Engine } from '../../lib/engine';
import { RingGroup } from '../../lib/group';
import { DeviceBuffer, NcclCommunicator, allReduceDevice } from '../../lib/device';
import { native } from '../../lib/binding';

const say = (o: object) => process.stdout.write(JSON.stringify(o, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)) + '\n');
const engine = Engine.create({ host: '127.0.0.1', port: 0, connections: 4 });
say({ port: engine.port });

const rl = readline.createInterface({ input: process.stdin });
rl.once('line', (line) => void main(JSON.parse(line)).catch((e) => { say({ fatal: String(e?.stack ?? e) }); process.exit(1); }));

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
      say({ step, ok: true, worldSize: r.worldSize, same, hash: native().contentHashSync(fromDevice), gpuHash: await dev.contentHash(), ms });
    } catch (err) {
      const e = err as Error & { code?: string };
      const after = await dev.contentHash();
      say({ step, ok: false, name: e.name, code: e.code, message: e.message, inputKept: after === inHash });
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
      say({ nccl: true, ok: true, first: v[0], last: v[1023] });
      buf.free();
      await comm.destroy();
    } catch (err) {
      say({ nccl: true, ok: false, message: String(err) });
    }
  }
  await engine.close();
  process.exit(0);
}
