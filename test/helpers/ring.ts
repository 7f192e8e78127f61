// Static groups of real peer processes (test/fixtures/engine-peer.ts): start them, form the group, run
// all-reduces on all of them at once.
import { PeerProcess, stopAll as stopProcesses } from '../harness/process';

const SCRIPT = 'test/fixtures/engine-peer.ts';

/** One engine-peer process. `request` rejects when the peer answered with a thrown error or took too long. */
export interface PeerHandle {
  rank: number;
  port: number;
  pid: number;
  proc: PeerProcess;
  request(cmd: Record<string, unknown>, timeoutMs?: number): Promise<any>;
  kill(signal?: NodeJS.Signals): void;
  exited: Promise<number | null>;
  stop(): Promise<void>;
}

export async function startPeer(rank: number, env: Record<string, string> = {}): Promise<PeerHandle> {
  const proc = new PeerProcess(SCRIPT, { env });
  const hello = await proc.ready;
  return {
    rank,
    port: hello.port as number,
    pid: proc.pid,
    proc,
    exited: proc.exited,
    async request({ cmd, ...args }, timeoutMs = 60_000) {
      const r = await proc.request(String(cmd), args, timeoutMs);
      if (r.thrown) throw new Error(`peer ${rank}: ${String(r.stack ?? r.message)}`);
      return r;
    },
    kill: (signal = 'SIGKILL') => proc.kill(signal),
    stop: () => proc.stop(),
  };
}

/** Starts n peers and forms one group of them (epoch 1); `members` names them (default `rank<i>`). */
export async function startRing(n: number, options: { token?: string; env?: Record<string, string>; members?: string[] } = {}): Promise<PeerHandle[]> {
  const peers = await Promise.all(Array.from({ length: n }, (_, i) => startPeer(i, options.env)));
  await configure(peers, { token: options.token, members: options.members, host: options.env?.TCCL_TEST_HOST });
  return peers;
}

/** Installs a group of these peers, in this order, at `epoch`. */
export async function configure(peers: PeerHandle[], options: { epoch?: number; token?: string; members?: string[]; host?: string } = {}): Promise<void> {
  const addresses = peers.map((p) => `${options.host ?? '127.0.0.1'}:${p.port}`);
  await Promise.all(peers.map((p, rank) => p.request({ cmd: 'configure', rank, peers: addresses, token: options.token, epoch: options.epoch, members: options.members })));
}

export function stopAll(peers: PeerHandle[]): Promise<void> {
  return stopProcesses(peers);
}

/** Sends the same allreduce command (with per-peer op lists if a function is given) to all peers. */
export async function allReduceOn(
  peers: PeerHandle[],
  ops: Record<string, unknown>[] | ((p: PeerHandle) => Record<string, unknown>[]),
): Promise<any[][]> {
  const replies = await Promise.all(peers.map((p) => p.request({ cmd: 'allreduce', ops: typeof ops === 'function' ? ops(p) : ops })));
  return replies.map((r) => r.results);
}
