// One peer of bench/topology/two-level.ts: a data-plane Engine in a static group on an emulated host (argument:
// JSON { listenHost, dataPort, sourceAddress, connections, value }). Serves (test/harness/runner.ts):
//   configure { rank, peers }        install the group (peers: `host:port` in ring order)
//   ring { n, tag }                  one ring all-reduce of contribution(value, 0, n): time, result hash
//   twoLevel { n, tag, regionOf }    the same sum by the two-level algorithm below: time, hash, bytes sent
// Two-level (a prototype, not a library feature): every member sends its buffer to its region's leader (the first
// member of the region in ring order), the leader sums them in ring order; the leaders send each other their
// region's sum and each adds them in region order (so every leader holds the same bits); each leader sends the
// total back to its members. The buffer goes in 8 chunks so that the phases overlap. Inputs are small integers
// (exact in float32), so every order gives the same sum.
import { createHash } from 'node:crypto';
import { Engine } from '../../lib/engine';
import { parseAddress } from '../../lib/group';
import { say, serve } from '../../test/harness/runner';
import { contribution } from '../../test/helpers/communicator';

const o = JSON.parse(process.argv[2]) as { listenHost: string; dataPort: number; sourceAddress: string; connections: number; value: number };
const engine = Engine.create({ host: o.listenHost, port: o.dataPort, sourceAddress: o.sourceAddress, connections: o.connections });
let rank = 0;
const sha = (a: Float32Array) => createHash('sha256').update(Buffer.from(a.buffer, a.byteOffset, a.byteLength)).digest('hex');
const add = (into: Float32Array, x: Float32Array) => {
  for (let i = 0; i < into.length; i++) into[i] += x[i];
};

/** Chunks the buffer is cut into, so that the three phases overlap (chunk c crosses while c + 1 is gathered). */
const CHUNKS = 8;

async function twoLevel(data: Float32Array, tag: number, regionOf: number[]): Promise<number> {
  const regions = [...new Set(regionOf)].sort((a, b) => a - b);
  const membersOf = (r: number) => regionOf.map((x, i) => [x, i]).filter(([x]) => x === r).map(([, i]) => i);
  const mine = membersOf(regionOf[rank]);
  const leader = mine[0];
  const leaders = regions.map((r) => membersOf(r)[0]);
  const bytes = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const step = Math.ceil(data.length / CHUNKS);
  const chunk = (a: Float32Array, c: number) => a.subarray(c * step, Math.min(a.length, (c + 1) * step));
  // Tags: one per chunk and phase (gather, cross, back).
  const t = (c: number, phase: number) => tag + 3 * c + phase;
  // Every operation is issued as soon as its input is ready, without waiting for the previous chunk's: the links
  // keep them in order, and a wait per chunk would add a round trip per chunk on the slow link.
  if (rank !== leader) {
    const result = new Float32Array(data.length);
    const ops: Promise<unknown>[] = [];
    for (let c = 0; c < CHUNKS; c++) ops.push(engine.exchange({ tag: t(c, 0), sends: [{ to: leader, stream: 0, data: bytes(chunk(data, c)) }] }));
    for (let c = 0; c < CHUNKS; c++) ops.push(engine.exchange({ tag: t(c, 2), recvs: [{ from: leader, stream: 0, data: bytes(chunk(result, c)) }] }));
    await Promise.all(ops);
    data.set(result);
    return data.byteLength;
  }
  const others = mine.filter((i) => i !== rank);
  const peers = leaders.filter((l) => l !== rank);
  const got = others.map(() => new Float32Array(data.length));
  const region = new Float32Array(data.length);
  const parts = peers.map(() => new Float32Array(data.length));
  const total = new Float32Array(data.length);
  const ops: Promise<unknown>[] = [];
  for (let c = 0; c < CHUNKS; c++) {
    const gathered = engine.exchange({ tag: t(c, 0), recvs: others.map((from, k) => ({ from, stream: 0, data: bytes(chunk(got[k], c)) })) }).then(() => {
      const sum = chunk(region, c);
      for (const i of mine) add(sum, i === rank ? chunk(data, c) : chunk(got[others.indexOf(i)], c)); // ring order
    });
    const crossed = gathered.then(() => engine.exchange({
      tag: t(c, 1),
      sends: peers.map((to) => ({ to, stream: 0, data: bytes(chunk(region, c)) })),
      recvs: peers.map((from, k) => ({ from, stream: 0, data: bytes(chunk(parts[k], c)) })),
    })).then(() => {
      const sum = chunk(total, c);
      for (const l of leaders) add(sum, l === rank ? chunk(region, c) : chunk(parts[peers.indexOf(l)], c)); // region order
    });
    ops.push(crossed.then(() => engine.exchange({ tag: t(c, 2), sends: others.map((to) => ({ to, stream: 0, data: bytes(chunk(total, c)) })) })));
  }
  await Promise.all(ops);
  data.set(total);
  return (peers.length + others.length) * data.byteLength;
}

serve(
  {
    configure: (c) => {
      rank = c.rank;
      engine.configure(1, rank, (c.peers as string[]).map((a, i) => ({ id: `h${i}`, ...parseAddress(a) })));
      return { ok: true };
    },
    ring: async (c) => {
      const data = contribution(o.value, 0, c.n);
      const t0 = performance.now();
      await engine.allReduce(data, { tag: c.tag, timeoutMs: 300_000, algorithm: 'ring' });
      return { ok: true, ms: performance.now() - t0, hash: sha(data), first: Array.from(data.slice(0, 4)) };
    },
    twoLevel: async (c) => {
      const data = contribution(o.value, 0, c.n);
      const t0 = performance.now();
      const bytesSent = await twoLevel(data, c.tag, c.regionOf);
      return { ok: true, ms: performance.now() - t0, hash: sha(data), first: Array.from(data.slice(0, 4)), bytesSent };
    },
  },
  { onExit: () => engine.close() },
);
say({ ev: 'ready', port: engine.port, pid: process.pid });
