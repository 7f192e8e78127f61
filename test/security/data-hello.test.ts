// What a stranger or a misbehaving member can send on a data port, one connection at a time: forged hellos (bad
// magic, ticket, index, epoch, version; a partial hello; silence) are refused, each within the hello deadline;
// a member that sends frames for operations that never start, or aborts for them, is cut off once it passes its
// early budget, and the memory the target holds stays under the cap.
import t from 'tap';
import { readFileSync } from 'node:fs';
import * as net from 'node:net';
import { ticketFromToken } from '../../lib/group';
import { startPeer, stopAll, PeerHandle } from '../helpers/ring';
import { PeerProcess } from '../harness/process';
import { sampleProcess, setSoftFdLimit } from './limits';

const TOKEN = 'hello-test-token';
const TICKET = ticketFromToken(TOKEN);
const HELLO_DEADLINE_MS = 1000; // the target's connectTimeoutMs
const PER_PEER_CAP = 32 << 20;
const TOTAL_CAP = 64 << 20;
const skip = process.platform !== 'linux' ? 'reads the target process through /proc (Linux)' : undefined;

function hello(o: { epoch: number; from?: number; to?: number; ticket?: Uint8Array; version?: number; magic?: number }): Buffer {
  const b = Buffer.alloc(64);
  b.writeUInt32LE(o.magic ?? 0x4c434354, 0);
  b.writeUInt16LE(o.version ?? 2, 4);
  b[6] = 1;
  b.writeBigUInt64LE(BigInt(o.epoch), 8);
  b.writeUInt32LE(o.from ?? 1, 16);
  b.writeUInt32LE(o.to ?? 0, 20);
  b.writeUInt16LE(0, 24);
  b.writeUInt16LE(1, 26);
  Buffer.from(o.ticket ?? TICKET).copy(b, 28);
  return b;
}

function frame(o: { type: number; tag: number; seq?: number; length: number; aux?: number }): Buffer {
  const b = Buffer.alloc(48);
  b.writeUInt32LE(0x31464354, 0);
  b[4] = o.type;
  b.writeUInt32LE(o.seq ?? 0, 12);
  b.writeBigUInt64LE(BigInt(o.tag), 16);
  b.writeBigUInt64LE(1n, 24);
  b.writeUInt32LE(o.length, 40);
  b.writeUInt32LE(o.aux ?? 0, 44);
  return b;
}

/** Connects, writes `bytes`, and reports what came back and whether (and when) the target closed the connection. */
function probe(port: number, bytes: Buffer, waitMs: number): Promise<{ reply: Buffer; closedAfterMs?: number }> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const chunks: Buffer[] = [];
    const t0 = performance.now();
    let closedAfterMs: number | undefined;
    const timer = setTimeout(() => finish(), waitMs);
    const finish = () => {
      clearTimeout(timer);
      s.resetAndDestroy();
      resolve({ reply: Buffer.concat(chunks), closedAfterMs });
    };
    s.on('connect', () => {
      if (bytes.length) s.write(bytes);
    });
    s.on('data', (d) => chunks.push(d));
    s.on('error', () => undefined);
    s.on('close', () => {
      closedAfterMs = performance.now() - t0;
      finish();
    });
  });
}

/** Stands in for member 1: answers the target's dials with an OK reply and swallows what follows. */
function fakeMember(): Promise<net.Server> {
  const server = net.createServer((s) => {
    let got = 0;
    s.on('error', () => undefined);
    s.on('data', (d) => {
      if (got < 64 && got + d.length >= 64) {
        const r = Buffer.alloc(8);
        r.writeUInt32LE(0x4b4f4354, 0);
        s.write(r);
      }
      got += d.length;
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** Says a good hello as member 1 of `epoch` and resolves with the connection once the target accepted it. */
function member(port: number, epoch: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => s.write(hello({ epoch })));
    let reply = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      reply = Buffer.concat([reply, d]);
      if (reply.length < 8) return;
      s.off('data', onData);
      if (reply.readUInt32LE(4) !== 0) reject(new Error(`hello refused with status ${reply.readUInt32LE(4)}`));
      else resolve(s);
    };
    s.on('data', onData);
    s.on('error', reject);
  });
}

/** Writes frames as fast as the socket takes them until the target closes it (or `max` frames or 20 s). */
async function pour(s: net.Socket, make: (i: number) => Buffer, max: number): Promise<{ sent: number; closed: boolean }> {
  let closed = false;
  s.on('close', () => (closed = true));
  s.on('error', () => undefined);
  const deadline = performance.now() + 20_000;
  let sent = 0;
  while (!closed && sent < max && performance.now() < deadline) {
    const batch: Buffer[] = [];
    for (let k = 0; k < 256 && sent < max; k++) batch.push(make(sent++));
    if (!s.write(Buffer.concat(batch))) await new Promise((r) => setTimeout(r, 5));
  }
  const until = performance.now() + 10_000;
  while (!closed && performance.now() < until) await new Promise((r) => setTimeout(r, 20));
  s.resetAndDestroy();
  return { sent, closed };
}

t.test('forged hellos, early frames and abort floods on a data port', { skip }, async (t) => {
  const fake = await fakeMember();
  const fakePort = (fake.address() as net.AddressInfo).port;
  const target: PeerHandle = await startPeer(0, {
    TCCL_TEST_ENGINE_OPTIONS: JSON.stringify({ connectTimeoutMs: HELLO_DEADLINE_MS, maxEarlyBytesPerPeer: PER_PEER_CAP, maxEarlyBytes: TOTAL_CAP }),
  });
  t.teardown(async () => {
    await stopAll([target]);
    fake.close();
  });
  let epoch = 1;
  const configure = () =>
    target.request({ cmd: 'configure', rank: 0, epoch, token: TOKEN, peers: [`127.0.0.1:${target.port}`, `127.0.0.1:${fakePort}`] });
  await configure();
  const base = sampleProcess(target.pid);
  const stats = async () => (await target.request({ cmd: 'stats' })) as any;

  t.test('forged hellos are refused, each within the hello deadline', async (t) => {
    const wait = HELLO_DEADLINE_MS + 4000;
    const cases: { name: string; bytes: Buffer; status?: number }[] = [
      { name: 'bad magic (garbage)', bytes: Buffer.alloc(64, 0x5a) },
      { name: 'bad ticket', bytes: hello({ epoch, ticket: new Uint8Array(16).fill(7) }), status: 2 },
      { name: 'bad index', bytes: hello({ epoch, from: 9 }), status: 4 },
      { name: 'itself', bytes: hello({ epoch, from: 0 }), status: 4 },
      { name: 'old epoch', bytes: hello({ epoch: epoch - 1 }), status: 3 },
      { name: 'bad version', bytes: hello({ epoch, version: 1 }), status: 1 },
      { name: 'a partial hello, then silence', bytes: hello({ epoch }).subarray(0, 10) },
      { name: 'silence', bytes: Buffer.alloc(0) },
    ];
    const results = await Promise.all(cases.map((c) => probe(target.port, c.bytes, wait)));
    cases.forEach((c, i) => {
      const r = results[i];
      t.ok(r.closedAfterMs !== undefined, `${c.name}: the target closed the connection (after ${r.closedAfterMs?.toFixed(0)} ms)`);
      if (c.status === undefined) t.equal(r.reply.length, 0, `${c.name}: no reply`);
      else t.equal(r.reply.length >= 8 ? r.reply.readUInt32LE(4) : -1, c.status, `${c.name}: refused with status ${c.status}`);
    });
    const ok = await member(target.port, epoch);
    t.pass('a member with the right ticket is still admitted');
    ok.end();
    const s = await stats();
    t.ok(s.stats.handshakesRefused >= cases.length, `refusals counted (${s.stats.handshakesRefused})`);
    t.ok(s.threads <= base.threads + 2, `no thread per connection (${s.threads} threads, ${base.threads} before)`);
  });

  t.test('out of descriptors: accept() fails with EMFILE, the oldest stranger makes room, no spin, no crash', async (t) => {
    // The target may open only ~150 more descriptors, far fewer than maxHandshakes (512): the flood runs it out.
    epoch++;
    await configure();
    const before = sampleProcess(target.pid);
    const soft = Number(/^Max open files\s+(\d+)/m.exec(readFileSync(`/proc/${target.pid}/limits`, 'utf8'))?.[1]);
    setSoftFdLimit(target.pid, before.fds + 150);
    const flooder = new PeerProcess('test/fixtures/flooder.ts');
    t.teardown(() => flooder.stop());
    await flooder.ready;
    const flood = flooder.request('flood', { port: target.port, count: 2000, ms: 6000, sources: 20 }, 60_000);
    await new Promise((r) => setTimeout(r, 3000));
    const during = await member(target.port, epoch);
    t.pass('a member is still admitted while the descriptors are exhausted');
    during.resetAndDestroy();
    await flood;
    const s = await stats();
    t.ok(s.stats.acceptExhausted > 0, `accept() ran out of descriptors (${s.stats.acceptExhausted} times) and the process lives`);
    // Sampled from outside: the target itself may still have no descriptor left to read /proc with.
    const threads = sampleProcess(target.pid).threads;
    t.ok(threads <= base.threads + 2, `no thread per connection (${threads} threads)`);
    t.equal(s.stats.internalErrors, 0, 'no internal error on a transport thread');
    setSoftFdLimit(target.pid, soft);
  });

  t.test('early frames for operations that never start: cut off at the early budget', async (t) => {
    // One-byte frames cost a whole segment each (256 KiB): 400 of them would hold 100 MiB.
    epoch++;
    await configure();
    const before = await stats();
    const s = await member(target.port, epoch);
    let peak = 0;
    const sampler = setInterval(async () => {
      peak = Math.max(peak, (await stats()).stats.earlyBytes);
    }, 50);
    const r = await pour(s, (i) => Buffer.concat([frame({ type: 1, tag: 10_000 + i, length: 1 }), Buffer.from([i & 0xff])]), 400);
    clearInterval(sampler);
    const after = await stats();
    t.ok(r.closed, `the target closed the connection after ${r.sent} one-byte frames`);
    t.ok(after.stats.earlyRefused > before.stats.earlyRefused, 'counted as refused for the early budget');
    t.ok(Math.max(peak, after.stats.earlyBytes) <= PER_PEER_CAP, `held at most the per-peer cap (${Math.max(peak, after.stats.earlyBytes)} bytes)`);
    t.ok(after.vmSizeKiB - before.vmSizeKiB < (PER_PEER_CAP + (64 << 20)) / 1024, `address space grew by ${after.vmSizeKiB - before.vmSizeKiB} KiB`);
  });

  t.test('empty early frames are not free', async (t) => {
    epoch++;
    await configure();
    const before = await stats();
    const s = await member(target.port, epoch);
    // Each costs its bookkeeping: 32 MiB hold about 260,000 of them; 400,000 pass the cap.
    const r = await pour(s, (i) => frame({ type: 1, tag: 100_000 + i, length: 0 }), 400_000);
    const after = await stats();
    t.ok(r.closed, `the target closed the connection after ${r.sent} empty frames`);
    t.ok(after.stats.earlyRefused > before.stats.earlyRefused, 'counted as refused for the early budget');
  });

  t.test('aborts for operations that never start: bounded', async (t) => {
    epoch++;
    await configure();
    const before = await stats();
    const s = await member(target.port, epoch);
    const message = Buffer.alloc(4000, 0x61);
    // 4,000-byte messages: 20,000 of them would hold 80 MB.
    const r = await pour(s, (i) => Buffer.concat([frame({ type: 2, tag: 1_000_000 + i, length: message.length, aux: 3 }), message]), 20_000);
    const after = await stats();
    t.ok(r.closed, `the target closed the connection after ${r.sent} aborts`);
    t.ok(after.stats.earlyRefused > before.stats.earlyRefused, 'counted as refused for the early budget');
    t.ok(after.rssKiB - before.rssKiB < (PER_PEER_CAP + (64 << 20)) / 1024, `resident memory grew by ${after.rssKiB - before.rssKiB} KiB`);
    t.equal(after.stats.internalErrors, 0, 'no internal error on a transport thread');
  });
});
