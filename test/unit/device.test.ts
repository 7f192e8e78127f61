// GPU surface without a GPU: build flags, the run-time loader's failure messages, DeviceBuffer guards, and that a
// device all-reduce fails with a clear error when CUDA is not usable. On a CUDA machine the parts that assume "no
// GPU" are skipped; test/gpu/run.sh covers the real GPU behaviour.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { native } from '../../lib/binding';
import {
  CudaUnavailableError, DeviceBuffer, NcclCommunicator, allReduceDevice, cudaInfo, encodedSize, gpuEncode,
} from '../../lib/device';
import { Engine } from '../../lib/engine';
import { TcclError } from '../../lib/errors';

const info = cudaInfo();
const noGpu = info.deviceCount === 0;
const DEVICE_TS = path.resolve(__dirname, '../../lib/device/index.ts');

// Runs a snippet in a fresh process (the libraries are loaded once per process) with extra environment.
function child(env: Record<string, string>, code: string): Record<string, unknown> {
  const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', `const d = require(${JSON.stringify(DEVICE_TS)});\n(async () => {${code}})().then((x) => console.log(JSON.stringify(x)), (e) => { console.error(e); process.exit(1); });`], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: 60_000,
  });
  if (r.status !== 0) throw new Error(`child failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

t.test('build flags and cudaInfo', async (t) => {
  const b = native().buildInfo();
  t.type(b.cuda, 'boolean');
  t.equal(info.kernels, b.cuda, 'the GPU kernels are present exactly in the CUDA build');
  for (const k of ['runtimeLoaded', 'ncclLoaded']) t.type((info as unknown as Record<string, unknown>)[k], 'boolean', k);
  for (const k of ['runtimeVersion', 'driverVersion', 'deviceCount', 'ncclVersion']) t.type((info as unknown as Record<string, unknown>)[k], 'number', k);
  if (info.runtimeLoaded) t.equal(info.runtimeError, '');
  else t.match(info.runtimeError, /libcudart/);
  if (info.deviceCount === 0) t.not(info.deviceError, '', 'says why there is no device');
});

t.test('a missing CUDA runtime gives a message that names what was tried and what to install', async (t) => {
  const r = child({ TCCL_CUDART_PATH: '/nonexistent/libcudart.so.13' }, `
    const info = d.cudaInfo();
    let err;
    try { await d.DeviceBuffer.alloc(4); } catch (e) { err = e; }
    return { info, name: err?.name, code: err?.code, message: err?.message, isClass: err instanceof d.CudaUnavailableError };`);
  const i = r.info as Record<string, unknown>;
  t.equal(i.runtimeLoaded, false);
  t.equal(i.deviceCount, 0);
  t.match(i.runtimeError, /libcudart/);
  t.match(i.runtimeError, /\/nonexistent\/libcudart\.so\.13/, 'names the file that was tried');
  t.match(i.runtimeError, /TCCL_CUDART_PATH/, 'says how to point at another one');
  t.match(i.runtimeError, /[Ii]nstall/, 'says what to install');
  t.equal(r.code, 'CUDA_UNAVAILABLE');
  t.equal(r.isClass, true, 'CudaUnavailableError');
  t.match(r.message, /CUDA is not available: .*libcudart/s);
});

const libc = ['/lib/x86_64-linux-gnu/libc.so.6', '/lib/aarch64-linux-gnu/libc.so.6', '/usr/lib/libc.so.6'].find((p) => existsSync(p));
t.test('a library that is not the CUDA runtime is refused with the missing symbols named', { skip: !libc && 'no libc path known here' }, async (t) => {
  const r = child({ TCCL_CUDART_PATH: libc! }, 'return d.cudaInfo();');
  t.equal(r.runtimeLoaded, false);
  t.match(r.runtimeError, /not a usable CUDA runtime \(missing cudaGetErrorString/);
});

t.test('a missing NCCL gives a clear error', async (t) => {
  const r = child({ TCCL_NCCL_PATH: '/nonexistent/libnccl.so.2' }, `
    const info = d.cudaInfo();
    let err;
    try { d.NcclCommunicator.uniqueId(); } catch (e) { err = e; }
    return { info, code: err?.code, message: err?.message, isClass: err instanceof d.CudaUnavailableError };`);
  const i = r.info as Record<string, unknown>;
  t.equal(i.ncclLoaded, false);
  t.match(i.ncclError, /libnccl\.so\.2/);
  t.match(i.ncclError, /TCCL_NCCL_PATH/);
  t.match(i.ncclError, /nvidia-nccl-cu13|libnccl2/);
  t.equal(r.code, 'NCCL_UNAVAILABLE');
  t.equal(r.isClass, true);
  t.match(r.message, /\/nonexistent\/libnccl\.so\.2/);
});

t.test('without a usable GPU, allocation and GPU kernels fail with CudaUnavailableError', { skip: !noGpu && 'a GPU is present' }, async (t) => {
  await t.rejects(DeviceBuffer.alloc(16), { name: 'CudaUnavailableError', code: 'CUDA_UNAVAILABLE', message: /CUDA is not available/ });
  await t.rejects(DeviceBuffer.from(new Float32Array(4)), CudaUnavailableError);
  const src = DeviceBuffer.wrap(0x10000n, 64, 'float32');
  const out = DeviceBuffer.wrap(0x20000n, 64, 'uint8');
  await t.rejects(gpuEncode('uint8', src, out, { blockSize: 8 }), CudaUnavailableError);
  await t.rejects(src.contentHash(), CudaUnavailableError);
  await t.rejects(src.copyTo(), CudaUnavailableError);
  await t.rejects(src.copyFrom(new Float32Array(16)), CudaUnavailableError);
});

t.test('allReduceDevice without CUDA fails clearly and never reaches the ring', { skip: !noGpu && 'a GPU is present' }, async (t) => {
  const engine = Engine.create({ host: '127.0.0.1' });
  t.teardown(() => engine.close());
  const buf = DeviceBuffer.wrap(0x10000n, 4096, 'float32');
  await t.rejects(allReduceDevice(engine, buf, { op: 'avg' }), { name: 'CudaUnavailableError', code: 'CUDA_UNAVAILABLE', message: /CUDA is not available/ });
  let called = 0;
  const fake = { allReduce: async () => { called++; return { worldSize: 1, bytesSent: 0, bytesReceived: 0 }; } };
  await t.rejects(allReduceDevice(fake, buf), CudaUnavailableError);
  t.equal(called, 0, 'the host all-reduce was not started');
  // the buffer is usable for another attempt (no stuck "busy" state)
  await t.rejects(allReduceDevice(fake, buf), CudaUnavailableError);
});

t.test('DeviceBuffer guards', async (t) => {
  await t.rejects(DeviceBuffer.alloc(0), TypeError, 'zero length');
  await t.rejects(DeviceBuffer.alloc(-4), TypeError, 'negative length');
  await t.rejects(DeviceBuffer.alloc(1.5), TypeError, 'fractional length');
  await t.rejects(DeviceBuffer.alloc(2 ** 53), TypeError, 'too large');
  await t.rejects(DeviceBuffer.alloc(4, { dtype: 'float8' as never }), { message: /Unknown dtype "float8"/ });
  await t.rejects(DeviceBuffer.alloc(4, { device: -1 }), TypeError, 'negative device');
  await t.rejects(DeviceBuffer.from(new Float32Array(0)), TypeError, 'empty array');
  await t.rejects(DeviceBuffer.from([1, 2] as never), TypeError, 'not a TypedArray');
  t.throws(() => DeviceBuffer.wrap(0n, 16, 'float32'), { name: 'TypeError', message: /null device pointer/ });
  t.throws(() => DeviceBuffer.wrap(4096 as never, 16, 'float32'), { message: /BigInt/ });
  t.throws(() => DeviceBuffer.wrap(-8n, 16, 'float32'), { message: /unsigned 64-bit/ });
  t.throws(() => DeviceBuffer.wrap(1n << 64n, 16, 'float32'), { message: /unsigned 64-bit/ });
  t.throws(() => DeviceBuffer.wrap(0x1000n, 0, 'float32'), TypeError, 'zero bytes');
  t.throws(() => DeviceBuffer.wrap(0x1000n, 10, 'float32'), { message: /not a multiple of the float32 element size/ });
  t.throws(() => DeviceBuffer.wrap(0x1002n, 16, 'float32'), { message: /not aligned/ });
  t.throws(() => DeviceBuffer.wrap(0x1000n, 16, 'complex64' as never), { message: /Unknown dtype/ });
  t.throws(() => DeviceBuffer.wrap(0xFFFFFFFFFFFFFFF0n, 64, 'float32'), { message: /overflows/ }, 'range past 2^64');
});

t.test('wrapped buffers: properties, dtype checks, use after free', { skip: !noGpu && 'a GPU would reject a fake pointer' }, async (t) => {
  const buf = DeviceBuffer.wrap(0x7f0000001000n, 64, 'float16', { device: 0 });
  t.equal(buf.pointer, 0x7f0000001000n);
  t.equal(buf.length, 32);
  t.equal(buf.byteLength, 64);
  t.equal(buf.dtype, 'float16');
  t.equal(buf.device, 0);
  t.equal(buf.owned, false, 'wrapped memory is not owned');
  t.equal(buf.freed, false);
  await t.rejects(buf.copyFrom(new Float32Array(32)), { name: 'TypeError', message: /dtype "float16" does not match Float32Array/ }, 'wrong dtype');
  await t.rejects(buf.copyFrom(new Uint16Array(33)), { message: /do not fit/ }, 'too many elements');
  await t.rejects(buf.copyFrom(new Uint16Array(8), { offset: 30 }), { message: /do not fit/ }, 'offset past the end');
  await t.rejects(buf.copyTo(new Int32Array(4)), TypeError, 'wrong destination dtype');
  const out = DeviceBuffer.wrap(0x7f0000002000n, 128, 'float16');
  await t.rejects(allReduceDevice({ allReduce: async () => ({ worldSize: 1, bytesSent: 0, bytesReceived: 0 }) }, buf, { output: out }), { message: /Expected "output" to hold 32 float16/ });
  await t.rejects(allReduceDevice({ allReduce: async () => ({ worldSize: 1, bytesSent: 0, bytesReceived: 0 }) }, buf, { op: 'mean' as never }), TypeError);
  await t.rejects(allReduceDevice({} as never, buf), { message: /Engine, RingGroup or Communicator/ });
  await t.rejects(allReduceDevice({ allReduce: async () => ({ worldSize: 1, bytesSent: 0, bytesReceived: 0 }) }, new Float32Array(4) as never), { message: /DeviceBuffer/ });
  buf.free();
  buf.free(); // idempotent
  t.equal(buf.freed, true);
  t.equal(buf.pointer, 0n);
  await t.rejects(buf.copyFrom(new Uint16Array(4)), { code: 'FREED', message: /use after free/ });
  await t.rejects(buf.copyTo(), { code: 'FREED' });
  await t.rejects(buf.contentHash(), { code: 'FREED' });
  await t.rejects(allReduceDevice({ allReduce: async () => ({ worldSize: 1, bytesSent: 0, bytesReceived: 0 }) }, buf), TcclError);
  t.throws(() => (buf as unknown as { mem: { copyToHost: (a: unknown, b: number) => unknown } }).mem.copyToHost(new Uint16Array(4), 0), { code: 'FREED' }, 'the native layer refuses too');
});

t.test('native layer guards', async (t) => {
  const a = native() as unknown as { DeviceMemory: new () => { wrap(p: unknown, b: number, d: number): void; allocate(b: number, d: number): Promise<void> } };
  const m = new a.DeviceMemory();
  t.throws(() => m.wrap(0n, 16, 0), { code: 'INVALID_ARGUMENT', message: /null/ });
  t.throws(() => m.wrap(16, 16, 0), { code: 'INVALID_ARGUMENT', message: /BigInt/ });
  t.throws(() => m.allocate(0, 0), { code: 'INVALID_ARGUMENT' });
  t.throws(() => m.allocate(-1, 0), { code: 'INVALID_ARGUMENT' });
  await t.rejects(NcclCommunicator.init(new Uint8Array(64), 2, 0), { message: /128-byte/ });
  await t.rejects(NcclCommunicator.init(new Uint8Array(128), 2, 2), { message: /not below size/ });
});

t.test('encodedSize of the GPU codecs matches the CPU codecs', async (t) => {
  t.equal(encodedSize('none', 10), 40);
  t.equal(encodedSize('float16', 10), 20);
  t.equal(encodedSize('uint8', 1000, 256), 3 * (8 + 256) + 8 + 232);
  t.equal(encodedSize('uint4', 5, 4), 8 + 2 + 8 + 1);
  t.throws(() => encodedSize('int3' as never, 4), TypeError);
});
