// GPU benchmark (needs a CUDA GPU and the CUDA build: `npm run build:cuda && node --import tsx bench/gpu/run.ts`):
// 1) device-buffer vs host-buffer all-reduce between 2 processes on this machine (TCP ring on loopback), and
// 2) GPU codec and content-hash throughput vs the CPU ones. Prints one JSON line per measurement.
import { native } from '../../lib/binding';
import { DeviceBuffer, cudaInfo, encodedSize, gpuDecode, gpuEncode } from '../../lib/device';
import { PeerProcess, stopAll } from '../../test/harness/process';

const MB = 1 << 20;
async function time(f: () => Promise<unknown>, iters = 5): Promise<number> {
  await f();
  let best = Infinity;
  for (let i = 0; i < iters; i++) {
    const t0 = performance.now();
    await f();
    best = Math.min(best, performance.now() - t0);
  }
  return best / 1000;
}

async function kernels(): Promise<void> {
  const n = 64 * MB / 4;
  const x = Float32Array.from({ length: n }, (_v, i) => Math.sin(i));
  const src = await DeviceBuffer.from(x);
  for (const codec of ['uint8', 'uint4', 'float16', 'bfloat16'] as const) {
    const code = { uint8: 1, uint4: 2, float16: 3, bfloat16: 4 }[codec];
    const bytes = encodedSize(codec, n);
    const out = await DeviceBuffer.alloc(bytes, { dtype: 'uint8' });
    const dec = await DeviceBuffer.alloc(n);
    const cpuOut = new Uint8Array(bytes);
    const gpuEnc = await time(() => gpuEncode(codec, src, out));
    const gpuDec = await time(() => gpuDecode(codec, out, n, dec, { accumulate: true }));
    const cpuEnc = await time(async () => native().encode(code, x, 256, false, 0, cpuOut), 3);
    console.log(JSON.stringify({ bench: 'codec', codec, mb: 64, gpuEncodeGBs: 0.064 * 1.048576 / gpuEnc, gpuDecodeAccGBs: 0.064 * 1.048576 / gpuDec, cpuEncodeGBs: 0.064 * 1.048576 / cpuEnc }));
    out.free();
    dec.free();
  }
  const gpuHash = await time(() => src.contentHash());
  const cpuHash = await time(() => native().contentHash(x), 3);
  console.log(JSON.stringify({ bench: 'contentHash', mb: 64, gpuGBs: 0.067108864 / gpuHash, cpuGBs: 0.067108864 / cpuHash }));
  src.free();
}

async function allReduce(): Promise<void> {
  const procs = [0, 1].map(() => new PeerProcess('bench/gpu/peer.ts'));
  try {
    const peers = (await Promise.all(procs.map((p) => p.ready))).map((hello) => `127.0.0.1:${hello.port}`);
    procs[0].on('event', ({ ev, ...row }) => {
      if (ev === 'result') console.log(JSON.stringify(row));
    });
    const replies = await Promise.all(procs.map((p, rank) => p.request('run', { rank, peers, sizesMB: [4, 64, 256], iters: 5 }, 600_000)));
    for (const r of replies) if (!r.ok) throw new Error(`a rank failed: ${String(r.message)}`);
  } finally {
    await stopAll(procs);
  }
}

async function main(): Promise<void> {
  const info = cudaInfo();
  if (info.deviceCount === 0) throw new Error(`no usable GPU: ${info.runtimeError || info.deviceError}`);
  if (info.kernels) await kernels();
  else console.log('GPU kernels not built: run `npm run build:cuda` for the codec/hash benchmark');
  await allReduce();
}
void main().catch((e) => { console.error(e); process.exit(1); });
