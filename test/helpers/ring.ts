// Starts real peer processes (test/fixtures/ring-peer.ts) and talks to them over stdin/stdout JSON lines.
import { ChildProcess, spawn } from 'node:child_process';
import * as path from 'node:path';
import * as readline from 'node:readline';

const FIXTURE = path.join(__dirname, '..', 'fixtures', 'ring-peer.ts');

export interface PeerHandle {
  rank: number;
  port: number;
  pid: number;
  proc: ChildProcess;
  request(cmd: Record<string, unknown>, timeoutMs?: number): Promise<any>;
  kill(signal?: NodeJS.Signals): void;
  exited: Promise<number | null>;
}

let nextId = 1;

export async function startPeer(rank: number, env: Record<string, string> = {}): Promise<PeerHandle> {
  const proc = spawn(process.execPath, ['--import', 'tsx', FIXTURE], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, ...env },
  });
  const rl = readline.createInterface({ input: proc.stdout! });
  const waiting = new Map<number, (v: any) => void>();
  let onHello: (v: any) => void;
  const hello = new Promise<any>((resolve) => (onHello = resolve));
  rl.on('line', (line) => {
    let msg: any;
    try {
      msg = JSON.parse(line);
    } catch {
      return;
    }
    if (msg.port !== undefined && msg.id === undefined) onHello(msg);
    else if (waiting.has(msg.id)) {
      waiting.get(msg.id)!(msg);
      waiting.delete(msg.id);
    }
  });
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  const first = await Promise.race([
    hello,
    exited.then((code) => {
      throw new Error(`peer process exited with ${code} before it listened`);
    }),
  ]);
  return {
    rank,
    port: first.port,
    pid: first.pid,
    proc,
    exited,
    request(cmd, timeoutMs = 60_000) {
      const id = nextId++;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiting.delete(id);
          reject(new Error(`peer ${rank} did not answer ${String(cmd.cmd)} within ${timeoutMs} ms`));
        }, timeoutMs);
        waiting.set(id, (v) => {
          clearTimeout(timer);
          if (v.fatal) reject(new Error(`peer ${rank}: ${v.fatal}`));
          else resolve(v);
        });
        exited.then(() => {
          if (waiting.has(id)) {
            clearTimeout(timer);
            waiting.delete(id);
            resolve({ id, exited: true });
          }
        });
        proc.stdin!.write(JSON.stringify({ ...cmd, id }) + '\n');
      });
    },
    kill(signal = 'SIGKILL') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    },
  };
}

/** Starts n peers and forms one ring of them (epoch 1). */
export async function startRing(n: number, options: { token?: string; env?: Record<string, string> } = {}): Promise<PeerHandle[]> {
  const peers = await Promise.all(Array.from({ length: n }, (_, i) => startPeer(i, options.env)));
  const host = options.env?.TCCL_TEST_HOST ?? '127.0.0.1';
  const addresses = peers.map((p) => `${host}:${p.port}`);
  await Promise.all(peers.map((p) => p.request({ cmd: 'configure', rank: p.rank, peers: addresses, token: options.token })));
  return peers;
}

export async function stopAll(peers: PeerHandle[]): Promise<void> {
  await Promise.all(
    peers.map(async (p) => {
      if (p.proc.exitCode !== null || p.proc.signalCode !== null) return;
      p.proc.stdin!.end();
      const t = setTimeout(() => p.kill('SIGKILL'), 5000);
      await p.exited;
      clearTimeout(t);
    }),
  );
}

/** Sends the same allreduce command (with per-peer op lists if a function is given) to all peers. */
export async function allReduceOn(
  peers: PeerHandle[],
  ops: Record<string, unknown>[] | ((p: PeerHandle) => Record<string, unknown>[]),
): Promise<any[][]> {
  const replies = await Promise.all(
    peers.map((p) => p.request({ cmd: 'allreduce', ops: typeof ops === 'function' ? ops(p) : ops })),
  );
  return replies.map((r) => r.results);
}
