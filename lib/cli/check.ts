/**
 * `tccl check --master host:port`: before training, tells a worker host whether it can reach the master, whether
 * its own data port is reachable from the others (the master dials it back and asks every member of its group
 * to), and estimates RTT and bandwidth to each member. Prints what to do about each problem; exits 1 when there is
 * one. The master's half: lib/master/check.ts.
 */
import { randomBytes } from 'node:crypto';
import * as net from 'node:net';
import { Command } from 'commander';
import {
  CheckedMember, Connection, Msg, PROTOCOL_NAME, PROTOCOL_VERSION, ClientKeyExchange, makeNonce, validateMessage,
} from '../protocol';
import { MAX_PROBE_HEADER, parseProbeHeader } from '../protocol/probe';
import { formatHostPort, parseHostPort } from '../validate';
import { CliOutput, hostPortArg, intArg, readToken } from './common';

interface CheckFlags {
  master: string;
  tokenFile?: string;
  group: number;
  dataPort: number;
  listenHost: string;
  advertiseAddress?: string;
  probeMib: number;
  timeoutMs: number;
}

/** Bytes received from one sender on the probe port. */
interface Burst {
  bytes: number;
  ms: number;
}

const fmtMs = (ms: number) => (ms < 10 ? ms.toFixed(2) : ms.toFixed(0)) + ' ms';
const fmtRate = (b: Burst) => (b.ms > 0 ? `${((b.bytes * 8) / (b.ms / 1000) / 1e6).toFixed(0)} Mbit/s` : 'too fast to time');
const fmtMiB = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

/** Median time of `n` TCP connects (closed at once): about one round trip each. */
async function connectRtt(host: string, port: number, n: number, timeoutMs: number): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    times.push(await new Promise<number>((resolve, reject) => {
      const t0 = performance.now();
      const s = net.connect({ host, port });
      const timer = setTimeout(() => { s.destroy(); reject(new Error(`no answer within ${timeoutMs} ms`)); }, timeoutMs);
      s.once('connect', () => { clearTimeout(timer); s.destroy(); resolve(performance.now() - t0); });
      s.once('error', (err) => { clearTimeout(timer); reject(err); });
    }));
  }
  times.sort((a, b) => a - b);
  return times[times.length >> 1];
}

/** Listens on the data port for the probes of this check; counts each sender's burst. */
async function probeListener(host: string, port: number, nonce: Uint8Array): Promise<{ server: net.Server; port: number; bursts: Map<string, Burst> }> {
  const bursts = new Map<string, Burst>();
  const server = net.createServer((socket) => {
    let header = '';
    let sender: string | undefined;
    let t0 = 0;
    let bytes = 0;
    socket.setTimeout(20_000, () => socket.destroy());
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      if (sender === undefined) {
        header += chunk.toString('latin1');
        const nl = header.indexOf('\n');
        if (nl < 0) {
          if (header.length > MAX_PROBE_HEADER) socket.destroy();
          return;
        }
        sender = parseProbeHeader(header.slice(0, nl), nonce);
        if (sender === undefined) return void socket.destroy();
        t0 = performance.now();
        bytes = Buffer.byteLength(header.slice(nl + 1), 'latin1');
        return;
      }
      bytes += chunk.length;
    });
    socket.on('end', () => {
      if (sender !== undefined) bursts.set(sender, { bytes, ms: performance.now() - t0 });
      socket.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => { server.off('error', reject); resolve(); });
  });
  return { server, port: (server.address() as net.AddressInfo).port, bursts };
}

/** Runs the handshake and the check on one connection; resolves with the master's answer. */
function askMaster(host: string, port: number, token: string | undefined, check: Omit<Msg<'check'>, 't'>, timeoutMs: number):
  Promise<{ helloRttMs: number; auth: boolean; result: Msg<'checkResult'> }> {
  return new Promise((resolve, reject) => {
    const conn = new Connection(net.connect({ host, port }));
    const nonce = makeNonce();
    let helloAt = 0;
    let helloRttMs = 0;
    let auth = false;
    let kx: ClientKeyExchange | undefined;
    let done = false;
    const timer = setTimeout(() => fail(new Error(`the master did not finish the check within ${timeoutMs} ms`)), timeoutMs);
    const fail = (e: Error) => { if (!done) { done = true; clearTimeout(timer); conn.close(); reject(e); } };
    conn.socket.once('connect', () => {
      helloAt = performance.now();
      conn.send({ t: 'hello', proto: PROTOCOL_NAME, version: PROTOCOL_VERSION, nonce });
    });
    conn.on('close', (reason) => fail(reason ?? new Error('the master closed the connection')));
    conn.on('message', (raw) => {
      try {
        const m = validateMessage(raw, ['challenge', 'kx', 'checkResult', 'error']);
        if (m.t === 'error') return fail(new Error(`the master refused: ${m.message} (${m.code})`));
        if (m.t === 'challenge') {
          helloRttMs = performance.now() - helloAt;
          auth = m.auth;
          if (m.auth && token === undefined) return fail(new Error('the master requires the run token: pass --token-file FILE or set TCCL_TOKEN'));
          if (!m.auth) return conn.send({ t: 'check', ...check });
          kx = new ClientKeyExchange(token!, nonce);
          return conn.send(kx.offer(m.nonce));
        }
        if (m.t === 'kx') {
          if (!kx) throw new Error('the master sent a key exchange nobody asked for');
          conn.secure(kx.finish(m));
          return conn.send({ t: 'check', ...check });
        }
        done = true;
        clearTimeout(timer);
        conn.close();
        resolve({ helloRttMs, auth, result: m });
      } catch (err) {
        fail(err as Error);
      }
    });
  });
}

/** The whole check; returns the lines to print and whether everything was fine. */
export async function runCheck(f: CheckFlags): Promise<{ ok: boolean; lines: string[] }> {
  const { host, port } = parseHostPort(f.master, '--master');
  const token = readToken(f.tokenFile);
  const lines: string[] = [];
  let ok = true;
  const problem = (s: string) => { ok = false; lines.push(`  PROBLEM: ${s}`); };

  // 1. The master.
  let rtt: number;
  try {
    rtt = await connectRtt(host, port, 3, Math.min(f.timeoutMs, 5000));
  } catch (err) {
    lines.push(`master ${f.master}: NOT reachable (${(err as Error).message})`);
    problem(`start "tccl master --port ${port}" on ${host} if it is not running, and open TCP port ${port} inbound there (firewall, cloud security group)`);
    return { ok, lines };
  }
  const nonce = randomBytes(16);
  const listener = await probeListener(f.listenHost, f.dataPort, nonce).catch((err: NodeJS.ErrnoException) => {
    throw new Error(err.code === 'EADDRINUSE'
      ? `data port ${f.dataPort} is in use on this host: run the check before starting the worker, or check another --data-port`
      : `cannot listen on ${formatHostPort(f.listenHost, f.dataPort)}: ${err.message}`);
  });
  try {
    const bytes = f.probeMib * 2 ** 20;
    let answer: Awaited<ReturnType<typeof askMaster>>;
    try {
      answer = await askMaster(host, port, token, {
        peerGroup: f.group, port: listener.port, advertiseAddress: f.advertiseAddress, nonce, probeBytes: bytes,
      }, f.timeoutMs);
    } catch (err) {
      lines.push(`master ${f.master}: reachable (TCP connect ${fmtMs(rtt)}), but the check failed: ${(err as Error).message}`);
      ok = false;
      return { ok, lines };
    }
    const r = answer.result;
    lines.push(`master ${f.master}: reachable, RTT ${fmtMs(rtt)} (TCP connect), ${fmtMs(answer.helloRttMs)} (protocol round trip); ` +
      `protocol ${PROTOCOL_VERSION}, ${answer.auth ? 'run token required and accepted' : 'no run token'}`);
    const addr = formatHostPort(f.advertiseAddress ?? r.observedHost, listener.port);
    lines.push(`this host as the master sees it: ${r.observedHost}; data port checked: ${addr}${f.dataPort === 0 ? ' (an OS-chosen port: pass --data-port with the port your worker uses)' : ''}`);
    // The bursts arrive asynchronously: give the last ones a moment.
    await new Promise((res) => setTimeout(res, 200));
    const masterBurst = listener.bursts.get('master');
    if (r.dialBack) {
      lines.push(`  the master reached it in ${fmtMs(r.dialBackMs)}${masterBurst ? `; ${fmtMiB(masterBurst.bytes)} from the master at ${fmtRate(masterBurst)}` : ''}`);
    } else {
      lines.push(`  the master could NOT reach it: ${r.dialBackError}`);
      problem(`open TCP port ${listener.port} inbound on this host (firewall, cloud security group, or a port forward on the NAT router), ` +
        `and start the worker with { dataPort: ${listener.port} }; behind NAT, also pass --advertise-address <public address> here and ` +
        '{ advertiseAddress } to Communicator.connect');
    }
    lines.push(`members of group ${f.group}: ${r.members.length}${r.members.length === 0 ? ' (none yet: only the master could be checked)' : ''}`);
    for (const m of r.members) await memberLines(m, listener.bursts, listener.port, lines, problem);
  } finally {
    listener.server.close();
  }
  lines.push(ok ? 'all good: this host can join the run' : 'some checks failed: see PROBLEM lines above');
  return { ok, lines };
}

/** One member: RTT to its data port from here, and whether (and how fast) it reached this host's port. */
async function memberLines(m: CheckedMember, bursts: Map<string, Burst>, dataPort: number, lines: string[], problem: (s: string) => void): Promise<void> {
  const name = `${m.id.split('@')[0]}${m.label ? ` (${m.label})` : ''} at ${formatHostPort(m.host, m.port)}`;
  const b = bursts.get(m.id.split('@')[0]);
  let rtt: string;
  let unreachable = '';
  try {
    rtt = `RTT ${fmtMs(await connectRtt(m.host, m.port, 3, 3000))}`;
  } catch (err) {
    rtt = `its data port is NOT reachable from here (${(err as Error).message})`;
    unreachable = `${name}: this host cannot connect to its data port: that host must open TCP port ${m.port} inbound`;
  }
  lines.push(`  ${name}: ${rtt}; ${m.ok ? `reached this host${b ? `, ${fmtMiB(b.bytes)} at ${fmtRate(b)}` : ''}` : `could NOT reach this host: ${m.message}`}`);
  if (unreachable) problem(unreachable);
  if (!m.ok) problem(`${name} cannot connect to this host's data port: open TCP port ${dataPort} inbound here`);
}

export function checkCommand(io: CliOutput): Command {
  return new Command('check')
    .description('before training: can this host reach the master, can the others reach its data port; RTT and bandwidth to each member')
    .requiredOption('--master <host:port>', 'the master', hostPortArg)
    .option('--token-file <file>', 'file holding the run token (default: TCCL_TOKEN)')
    .option('--group <n>', 'peer group to check against', intArg(0, 0xffffffff), 0)
    .option('--data-port <n>', 'the data port your worker will use (0: any free port)', intArg(0, 65535), 0)
    .option('--listen-host <address>', 'address to listen on for the probes', '0.0.0.0')
    .option('--advertise-address <address>', 'address the others should dial (default: what the master sees)')
    .option('--probe-mib <n>', 'MiB each member sends for the bandwidth estimate', intArg(0, 64), 4)
    .option('--timeout-ms <n>', 'give up on the master after this long', intArg(1000, 600_000), 30_000)
    .action(async (flags: CheckFlags) => {
      const { ok, lines } = await runCheck(flags);
      io.out(lines.join('\n') + '\n');
      if (!ok) process.exitCode = 1;
    });
}
