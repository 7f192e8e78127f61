// GPU checks (need a CUDA GPU; run with `bash test/gpu/run.sh`): DeviceBuffer round trips, GPU codecs and content
// hash against the CPU ones bit for bit, device all-reduce across several processes on one GPU (TCP ring between
// them, results bit-identical to the host all-reduce), abort when a process is killed, and the NCCL bootstrap
// (unique id relayed by the parent, as the master would) when NCCL is found. Prints `N passed, N failed`.
import { native } from '../../lib/binding';
import { DeviceBuffer, NcclCommunicator, cudaInfo, encodedSize, gpuDecode, gpuEncode, GpuCodec } from '../../lib/device';
import type { DType } from '../../lib/dtype';
import { PeerProcess, stopAll } from '../harness/process';

let passed = 0, failed = 0;
function check(ok: boolean, what: string, detail = ''): void {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? 'ok' : 'FAIL'} - ${what}${!ok && detail ? `: ${detail}` : ''}`);
}
const eqBytes = (a: ArrayBufferView, b: ArrayBufferView) =>
  Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32);
}

async function roundTrips(device: number): Promise<void> {
  const r = rng(1);
  const types: [DType, (n: number) => ArrayBufferView & { length: number }][] = [
    ['float32', (n) => Float32Array.from({ length: n }, () => r() * 2 - 1)],
    ['float64', (n) => Float64Array.from({ length: n }, () => r())],
    ['float16', (n) => Uint16Array.from({ length: n }, () => (r() * 65536) | 0)],
    ['bfloat16', (n) => Uint16Array.from({ length: n }, () => (r() * 65536) | 0)],
    ['int8', (n) => Int8Array.from({ length: n }, () => (r() * 256 - 128) | 0)],
    ['uint8', (n) => Uint8Array.from({ length: n }, () => (r() * 256) | 0)],
    ['int16', (n) => Int16Array.from({ length: n }, () => (r() * 65536 - 32768) | 0)],
    ['int32', (n) => Int32Array.from({ length: n }, () => (r() * 2 ** 32) | 0)],
    ['uint32', (n) => Uint32Array.from({ length: n }, () => (r() * 2 ** 32) >>> 0)],
    ['int64', (n) => BigInt64Array.from({ length: n }, () => BigInt((r() * 2 ** 31) | 0) << 20n)],
    ['uint64', (n) => BigUint64Array.from({ length: n }, () => BigInt((r() * 2 ** 31) >>> 0) << 30n)],
  ];
  for (const [dtype, make] of types) {
    for (const n of [1, 1023, 1 << 20]) {
      const src = make(n) as never;
      const buf = await DeviceBuffer.from(src, { dtype, device });
      const back = await buf.toArray();
      check(eqBytes(back, src), `round trip ${dtype} x ${n}`);
      // wrap the same memory (as another library would hand it in) and read a slice at an offset
      if (n > 8) {
        const es = buf.byteLength / buf.length;
        const view = DeviceBuffer.wrap(buf.pointer + BigInt(4 * es), 4 * es, dtype, { device });
        const part = await view.toArray();
        check(!view.owned && eqBytes(part, (src as unknown as { subarray(a: number, b: number): ArrayBufferView }).subarray(4, 8)), `wrapped slice ${dtype}`);
        view.free();
      }
      buf.free();
      check(buf.freed && buf.pointer === 0n, `free ${dtype}`);
    }
  }
  let err: unknown;
  try {
    DeviceBuffer.wrap(BigInt(0x1000), 64, 'float32', { device });
  } catch (e) {
    err = e;
  }
  check(err instanceof TypeError, 'wrap refuses a pointer that is not device memory', String(err));
}

async function codecs(device: number): Promise<void> {
  if (!cudaInfo().kernels) {
    check(false, 'GPU kernels present (build with npm run build:cuda)');
    return;
  }
  const a = native();
  const r = rng(7);
  const data: [string, Float32Array][] = [
    ['uniform', Float32Array.from({ length: 100_003 }, () => r() * 8 - 4)],
    ['wide range', Float32Array.from({ length: 4099 }, () => (r() - 0.5) * 1e30)],
    ['constant blocks + -0', Float32Array.from({ length: 1024 }, (_v, i) => (i < 512 ? 3.5 : -0))],
    ['tiny ranges (subnormal scale, float64 path)', Float32Array.from({ length: 2048 }, (_v, i) => 1e-38 + (i % 3) * 1e-44)],
    ['f16 edge', Float32Array.from({ length: 4096 }, (_v, i) => (i % 2 ? 1 : -1) * 2 ** (-26 + (i % 41)) * (1 + r()))],
  ];
  const codecsToTry: [GpuCodec, number][] = [['none', 0], ['uint8', 1], ['uint4', 2], ['float16', 3], ['bfloat16', 4]];
  for (const [name, x] of data) {
    const src = await DeviceBuffer.from(x, { device });
    for (const [codec, code] of codecsToTry) {
      for (const blockSize of code === 1 || code === 2 ? [256, 7, 0] : [256]) {
        for (const stochastic of code === 1 || code === 2 ? [false, true] : [false]) {
          const bytes = encodedSize(codec, x.length, blockSize);
          const cpu = new Uint8Array(bytes);
          const cpuOk = a.encode(code, x, blockSize, stochastic, 12345, cpu);
          const out = await DeviceBuffer.alloc(bytes, { dtype: 'uint8', device });
          const gpuOk = await gpuEncode(codec, src, out, { blockSize, stochastic, seed: 12345 });
          const label = `${codec} ${name} block ${blockSize}${stochastic ? ' stochastic' : ''}`;
          check(gpuOk === cpuOk, `encode ok flag ${label}`, `gpu ${gpuOk} cpu ${cpuOk}`);
          if (cpuOk) {
            const gpu = (await out.toArray()) as Uint8Array;
            const bad = gpu.findIndex((v, i) => v !== cpu[i]);
            check(bad < 0, `encode bytes ${label}`, `first difference at byte ${bad}`);
            const dec = await DeviceBuffer.alloc(x.length, { device });
            await gpuDecode(codec, out, x.length, dec, { blockSize });
            const ref = new Float32Array(x.length);
            a.decode(code, cpu, x.length, blockSize, ref);
            check(eqBytes((await dec.toArray()) as Float32Array, ref), `decode ${label}`);
            const acc0 = Float32Array.from(x, (v) => v * 0.5);
            const acc = await DeviceBuffer.from(acc0, { device });
            await gpuDecode(codec, out, x.length, acc, { blockSize, accumulate: true });
            const refAcc = acc0.map((v, i) => Math.fround(v + ref[i]));
            check(eqBytes((await acc.toArray()) as Float32Array, refAcc), `decodeAccumulate ${label}`);
            dec.free();
            acc.free();
          }
          out.free();
        }
      }
    }
    src.free();
  }
  const bad = await DeviceBuffer.from(Float32Array.of(1, NaN, 2), { device });
  const o = await DeviceBuffer.alloc(64, { dtype: 'uint8', device });
  check((await gpuEncode('uint8', bad, o)) === false, 'GPU encode refuses NaN like the CPU');
  bad.free();
  o.free();
}

async function hashes(device: number): Promise<void> {
  if (!cudaInfo().kernels) return;
  const r = rng(3);
  for (const n of [1, 7, 31, 32, 33, 1000, (1 << 20) - 1, 1 << 20, (1 << 20) + 13, 5 * (1 << 20) + 7]) {
    const bytes = Uint8Array.from({ length: n }, () => (r() * 256) | 0);
    const buf = await DeviceBuffer.from(bytes, { device });
    check((await buf.contentHash()) === native().contentHashSync(bytes), `content hash ${n} bytes`);
    if (n > 16) {
      // unaligned start: the byte-wise load path
      const view = DeviceBuffer.wrap(buf.pointer + 3n, n - 3, 'uint8', { device });
      check((await view.contentHash()) === native().contentHashSync(bytes.subarray(3)), `content hash ${n - 3} bytes at an unaligned address`);
    }
    buf.free();
  }
}

interface Peer { proc: PeerProcess; port: number }
async function startPeer(): Promise<Peer> {
  const proc = new PeerProcess('test/gpu/peer.ts');
  return { proc, port: (await proc.ready).port as number };
}
/** The peer's next result (a step, or the NCCL check); undefined once it exited. */
function next(p: Peer): Promise<Record<string, unknown> | undefined> {
  return p.proc.next((e) => e.ev === 'step' || e.ev === 'nccl', 300_000);
}

async function multiProcess(device: number, size: number, kill: boolean, withNccl: boolean): Promise<void> {
  const peers = await Promise.all(Array.from({ length: size }, startPeer));
  const addrs = peers.map((p) => `127.0.0.1:${p.port}`);
  const steps = kill ? 200 : 4;
  const count = kill ? 8 << 20 : (1 << 20) + 3;
  const nccl = withNccl ? { id: Array.from(NcclCommunicator.uniqueId()), size } : undefined; // the master's relay
  peers.forEach((p, rank) => void p.proc.request('run', { rank, peers: addrs, steps, count, device, nccl: kill ? undefined : nccl }));
  if (kill) {
    await next(peers[size - 1]); // let one step finish, then kill the last process mid-run
    peers[size - 1].proc.kill('SIGKILL');
    for (let rank = 0; rank < size - 1; rank++) {
      let m: Record<string, unknown> | undefined;
      do m = await next(peers[rank]); while (m && m.ok === true);
      check(!!m && m.ok === false && m.code === 'PEER_LOST', `rank ${rank}: a killed process fails the device all-reduce with PeerLostError`, JSON.stringify(m));
      check(!!m && m.inputKept === true, `rank ${rank}: the device buffer still holds its input after the failure`);
    }
  } else {
    const results = await Promise.all(peers.map(async (p) => {
      const out = [];
      for (let s = 0; s < steps; s++) out.push(await next(p));
      if (withNccl) out.push(await next(p));
      return out;
    }));
    for (let s = 0; s < steps; s++) {
      const row = results.map((r) => r[s]!);
      check(row.every((m) => m.ok && m.same), `step ${s}: device all-reduce equals the host all-reduce bit for bit on every rank`, JSON.stringify(row));
      check(row.every((m) => m.hash === row[0].hash && m.gpuHash === m.hash), `step ${s}: all ranks hold identical bits (CPU and GPU hashes agree)`);
      console.log(`  step ${s}: ${row.map((m) => `${(m.ms as number).toFixed(1)} ms`).join(', ')}`);
    }
    if (withNccl) {
      const expect = (size * (size + 1)) / 2;
      const row = results.map((r) => r[steps]!);
      check(row.every((m) => m.ok && m.first === expect && m.last === expect), `NCCL communicator (id relayed by the parent) all-reduce over ${size} ranks`, JSON.stringify(row));
    }
  }
  await stopAll(peers.map((p) => p.proc));
}

async function main(): Promise<void> {
  const info = cudaInfo();
  console.log(JSON.stringify(info));
  if (info.deviceCount === 0) {
    console.log(`no usable GPU: ${info.runtimeError || info.deviceError}`);
    console.log('0 passed, 1 failed');
    process.exit(1);
  }
  const device = Number(process.env.TCCL_GPU_DEVICE ?? 0);
  await roundTrips(device);
  await codecs(device);
  await hashes(device);
  await multiProcess(device, 3, false, info.ncclLoaded);
  await multiProcess(device, 3, true, false);
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

void main().catch((e) => {
  console.error(e);
  console.log(`${passed} passed, ${failed + 1} failed`);
  process.exit(1);
});
