// Issue 21: 20,000 half-open connections on the master's port (two flood processes of 10,000, one byte each,
// from 2,000 loopback source addresses, reconnecting as soon as one is closed, held for 30 s; descriptor
// limits set explicitly: 20,000 for each flood, 4,096 for the master). Throughout, the master's descriptors stay
// under its cap of unauthenticated connections plus a margin and its threads under baseline + 16; meanwhile a
// new peer joins and is voted in, and a member SIGKILLed during the flood is replaced by a re-formed group.
import t from 'tap';
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { Communicator } from '../../lib/peer/communicator';
import { PeerProcess, ROOT, waitFor } from '../harness/process';

const TOKEN = 'flood-test-token';
const CAP = 1024; // the master's default maxUnauthenticated
const FLOOD = 10_000; // per flood process; two of them
const FLOOD_MS = 30_000;

/** A child under `ulimit -n nofile` (set explicitly, below the hard limit) printing JSON lines. */
function limited(nofile: number, script: string, args: string[]): { child: ChildProcess; lines: Record<string, unknown>[]; next: (ev: string, ms: number) => Promise<Record<string, unknown>> } {
  const quoted = [process.execPath, '--import', 'tsx', path.join(ROOT, script), ...args].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
  const child = spawn('bash', ['-c', `ulimit -n ${nofile} && exec ${quoted}`], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, TCCL_LOG_LEVEL: 'warn' } });
  child.stderr!.on('data', (d: Buffer) => { if (process.env.TCCL_TEST_VERBOSE) process.stderr.write(d); });
  const lines: Record<string, unknown>[] = [];
  readline.createInterface({ input: child.stdout! }).on('line', (l) => { try { lines.push(JSON.parse(l)); } catch { /* not ours */ } });
  const next = async (ev: string, ms: number) => {
    await waitFor(() => lines.some((l) => l.ev === ev) || child.exitCode !== null, ms, `${script}: ${ev}`);
    const l = lines.find((x) => x.ev === ev);
    if (!l) throw new Error(`${script} exited (${child.exitCode}) before "${ev}"`);
    return l;
  };
  return { child, lines, next };
}

function procCounts(pid: number): { fds: number; threads: number } | undefined {
  try {
    const threads = Number(/Threads:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
    return { fds: fs.readdirSync(`/proc/${pid}/fd`).length, threads };
  } catch {
    return undefined;
  }
}

t.test('a flood of 20,000 half-open connections: the master holds, a peer joins, a killed member is replaced', { timeout: 240_000 }, async (t) => {
  if (process.platform !== 'linux') return t.pass('skipped: needs /proc and many loopback addresses (Linux)');
  const master = limited(4096, 'test/fixtures/master-process.ts', [JSON.stringify({ host: '127.0.0.1', token: TOKEN, heartbeatIntervalMs: 500, peerTimeoutMs: 15_000, logLevel: 'warn' })]);
  t.teardown(() => { master.child.kill('SIGKILL'); });
  const port = Number((await master.next('ready', 30_000)).port);
  const pid = master.child.pid!;
  const opts = { master: `127.0.0.1:${port}`, token: TOKEN, connections: 1, logLevel: 'silent' as const, listenHost: '127.0.0.1' };

  const a = await Communicator.connect(opts);
  t.teardown(() => a.close());
  const b = new PeerProcess('test/fixtures/communicator-peer.ts', { argv: [JSON.stringify(opts)] });
  t.teardown(() => b.kill());
  await waitFor(() => a.arePeersPending(), 30_000, 'b pending');
  await a.updateTopology();
  await b.ready;
  const base = procCounts(pid)!;

  const samples: { fds: number; threads: number }[] = [];
  const sampler = setInterval(() => { const c = procCounts(pid); if (c) samples.push(c); }, 200);
  t.teardown(() => clearInterval(sampler));
  const floods = [2, 5002].map((first) => limited(20_000, 'test/security/flood.ts', ['127.0.0.1', String(port), String(FLOOD), String(FLOOD_MS), String(first)]));
  t.teardown(() => { for (const f of floods) f.child.kill('SIGKILL'); });
  const held = await Promise.all(floods.map((f) => f.next('held', FLOOD_MS + 30_000)));
  t.comment(`floods opened: ${held.map((h) => h.opened).join(', ')}`);

  // A new peer joins during the flood and is voted in.
  const cp = Communicator.connect(opts);
  await waitFor(() => a.arePeersPending(), 60_000, 'c pending during the flood');
  await Promise.all([a.updateTopology({ timeoutMs: 60_000 }), b.request('updateTopology', { timeoutMs: 60_000 }, 90_000)]);
  const c = await cp;
  t.teardown(() => c.close());
  t.equal(a.worldSize, 3, 'c was admitted during the flood');

  // A member dies during the flood: the survivors re-form and all-reduce.
  b.kill('SIGKILL');
  const deadline = Date.now() + 60_000;
  for (;;) {
    const x = new Float32Array([1, 2]);
    const y = new Float32Array([3, 4]);
    try {
      const [r] = await Promise.all([a.allReduce(x, { timeoutMs: 10_000 }), c.allReduce(y, { timeoutMs: 10_000 })]);
      if (r.worldSize !== 2) throw new Error(`world ${r.worldSize}`);
      t.same(Array.from(x), [4, 6], 'the re-formed group all-reduces during the flood');
      break;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  const stillFlooding = floods.every((f) => !f.lines.some((l) => l.ev === 'done'));
  t.ok(stillFlooding, 'all of it happened while the flood was on');

  const done = await Promise.all(floods.map((f) => f.next('done', FLOOD_MS + 60_000)));
  clearInterval(sampler);
  t.comment(`flood: ${JSON.stringify(done)}; master baseline ${JSON.stringify(base)}, samples ${samples.length}`);
  t.ok(done.every((d) => Number(d.closedByServer) > 0), 'the master closed flood connections (the cap was reached)');
  t.ok(samples.length > 20, 'sampled throughout');
  const maxFds = Math.max(...samples.map((s) => s.fds));
  const maxThreads = Math.max(...samples.map((s) => s.threads));
  t.ok(maxFds <= base.fds + CAP + 64, `master descriptors peaked at ${maxFds} (baseline ${base.fds}, cap ${CAP})`);
  t.ok(maxThreads <= base.threads + 16, `master threads peaked at ${maxThreads} (baseline ${base.threads})`);
  t.equal(master.child.exitCode, null, 'the master is alive');
});

/** CPU time the process used so far, in clock ticks (utime + stime). */
function cpuTicks(pid: number): number {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(f[11]) + Number(f[12]);
}

t.test('a master with a low descriptor limit (256) under a flood: the cap follows the limit, a peer joins, no spinning after', { timeout: 120_000 }, async (t) => {
  if (process.platform !== 'linux') return t.pass('skipped: Linux only');
  const master = limited(256, 'test/fixtures/master-process.ts', [JSON.stringify({ host: '127.0.0.1', token: TOKEN, peerTimeoutMs: 15_000, logLevel: 'warn' })]);
  t.teardown(() => { master.child.kill('SIGKILL'); });
  const port = Number((await master.next('ready', 30_000)).port);
  const pid = master.child.pid!;
  const flood = limited(20_000, 'test/security/flood.ts', ['127.0.0.1', String(port), '5000', '12000', '2']);
  t.teardown(() => { flood.child.kill('SIGKILL'); });
  await flood.next('held', 30_000);
  const a = await Communicator.connect({ master: `127.0.0.1:${port}`, token: TOKEN, connections: 1, logLevel: 'silent', listenHost: '127.0.0.1' });
  t.teardown(() => a.close());
  t.equal(a.worldSize, 1, 'a peer joined during the flood');
  t.notOk(flood.lines.some((l) => l.ev === 'done'), 'while the flood was on');
  const done = await flood.next('done', 60_000);
  t.ok(Number(done.closedByServer) > 0, `the master closed flood connections: ${JSON.stringify(done)}`);
  await new Promise((r) => setTimeout(r, 1000));
  const before = cpuTicks(pid);
  await new Promise((r) => setTimeout(r, 3000));
  const used = cpuTicks(pid) - before;
  t.ok(used < 150, `the master is idle after the flood (${used} ticks of CPU in 3 s; a spinning accept loop would use ~300)`);
  t.equal(master.child.exitCode, null, 'the master is alive');
});
