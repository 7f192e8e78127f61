#!/usr/bin/env node
/**
 * Churn recovery bench: `node --import tsx bench/churn/run.ts [--trials 20] [--frozen-trials 5] [--mib 16]`.
 *
 * 3 peers all-reduce `--mib` MiB of float32 in a loop (voting every step so replacements get in). Each trial
 * SIGKILLs a random peer at a random moment and measures the time from the kill to the next successful
 * all-reduce on the survivors (in a newer epoch), then starts a replacement and measures from its process start
 * to its first successful all-reduce. Frozen trials SIGSTOP a peer instead (master peer timeout 2 s). Master
 * trials (`--master-trials 10`) run the master in its own process (test/fixtures/master-process.ts), SIGKILL it
 * and start a new one on the same port: they measure the restart itself (from the kill to the new master
 * listening) and from the master being reachable again to the next all-reduce completed on every peer, in a
 * newer epoch (the group rebuilt from the peers' reports). Prints JSON with medians and worst cases.
 */
import { Master } from '../../lib/master/master';
import { Communicator } from '../../lib/peer/communicator';
import { PeerProcess } from '../../test/harness/process';
import { say } from '../../test/harness/runner';
import { argValue, machineInfo, median, writeResult } from '../common';

async function peer(master: string, mib: number): Promise<void> {
  const comm = await Communicator.connect({ master, connections: 4, listenHost: '127.0.0.1', logLevel: 'error' });
  const data = new Float32Array((mib << 20) / 4).fill(1);
  for (;;) {
    try {
      const r = await comm.allReduce(data, { timeoutMs: 20_000 });
      say({ ev: 'op', t: Date.now(), epoch: r.epoch, world: r.worldSize });
      data.fill(1);
    } catch {
      // retryable failures: the group re-forms; the vote below waits for it
    }
    await comm.updateTopology({ timeoutMs: 60_000 });
  }
}

interface P {
  proc: PeerProcess;
  started: number;
  firstOp?: number;
  lastEpoch: number;
}

async function main(): Promise<void> {
  const trials = Number(argValue('trials', '20'));
  const frozenTrials = Number(argValue('frozen-trials', '5'));
  const mib = Number(argValue('mib', '16'));
  const master = new Master({ logLevel: 'error', peerTimeoutMs: 2000, heartbeatIntervalMs: 250 });
  const port = await master.listen();
  const peers = new Set<P>();
  let opListeners: ((t: number, epoch: number, p: P) => void)[] = [];
  const start = () => {
    const p: P = { proc: new PeerProcess(__filename, { argv: ['--peer', `127.0.0.1:${port}`, '--mib', String(mib)] }), started: Date.now(), lastEpoch: 0 };
    peers.add(p);
    p.proc.on('event', (m: { ev: string; t: number; epoch: number }) => {
      if (m.ev !== 'op') return;
      p.firstOp ??= m.t;
      p.lastEpoch = m.epoch;
      for (const l of opListeners) l(m.t, m.epoch, p);
    });
    void p.proc.exited.then(() => peers.delete(p));
    return p;
  };
  const nextOp = (after: number, minEpoch: number, not?: P) =>
    new Promise<number>((resolve) => {
      const l = (t: number, epoch: number, p: P) => {
        if (t >= after && epoch >= minEpoch && p !== not) {
          opListeners = opListeners.filter((x) => x !== l);
          resolve(t);
        }
      };
      opListeners.push(l);
    });
  const firstOpOf = (p: P) => new Promise<number>((resolve) => {
    const l = (t: number, _e: number, q: P) => {
      if (q === p) { opListeners = opListeners.filter((x) => x !== l); resolve(t - p.started); }
    };
    opListeners.push(l);
  });
  const joins: number[] = [];
  const spawnAndWait = async () => {
    const p = start();
    joins.push(await firstOpOf(p));
  };
  start();
  await new Promise((r) => setTimeout(r, 1500));
  await Promise.all([spawnAndWait(), spawnAndWait()]);
  const kills: number[] = [];
  const frozen: number[] = [];
  for (let i = 0; i < trials + frozenTrials; i++) {
    await new Promise((r) => setTimeout(r, 200 + Math.random() * 800));
    const list = [...peers];
    const victim = list[Math.floor(Math.random() * list.length)];
    const epochNow = Math.max(...master.groupsInfo().map((g) => g.epoch));
    const t0 = Date.now();
    const recovered = nextOp(t0, epochNow + 1, victim);
    victim.proc.kill(i < trials ? 'SIGKILL' : 'SIGSTOP');
    const t1 = await recovered;
    (i < trials ? kills : frozen).push(t1 - t0);
    if (i >= trials) {
      victim.proc.child.kill('SIGKILL');
      victim.proc.child.kill('SIGCONT');
    }
    await spawnAndWait();
  }
  for (const p of peers) p.proc.kill();
  await master.close();
  const masterKilled = await masterTrials(Number(argValue('master-trials', '10')), mib);
  const summary = {
    mib, peers: 3, trials, frozenTrials, peerTimeoutMs: 2000,
    killToNextAllReduceMs: { median: median(kills), worst: Math.max(...kills), all: kills },
    frozenToNextAllReduceMs: { median: median(frozen), worst: Math.max(...frozen), all: frozen },
    startToFirstAllReduceMs: { median: median(joins), worst: Math.max(...joins) },
    masterKilled,
  };
  process.stdout.write(JSON.stringify(summary, null, 2) + '\n');
  console.error(`wrote ${writeResult('churn', { machine: machineInfo(), ...summary })}`);
  process.exit(0);
}

/** SIGKILLs the master of 3 looping peers `trials` times and starts it again on its port. */
async function masterTrials(trials: number, mib: number) {
  if (trials === 0) return undefined;
  const startMaster = async (port: number) => {
    const proc = new PeerProcess('test/fixtures/master-process.ts', { argv: [JSON.stringify({ logLevel: 'error', peerTimeoutMs: 2000, heartbeatIntervalMs: 250, port })] });
    const r = await proc.ready;
    return { proc, port: r.port as number, at: Date.now() };
  };
  let master = await startMaster(0);
  const ops: { t: number; epoch: number; p: number }[] = [];
  const waiters: (() => void)[] = [];
  const procs = [0, 1, 2].map((i) => {
    const proc = new PeerProcess(__filename, { argv: ['--peer', `127.0.0.1:${master.port}`, '--mib', String(mib)] });
    proc.on('event', (m: { ev: string; t: number; epoch: number }) => {
      if (m.ev !== 'op') return;
      ops.push({ t: m.t, epoch: m.epoch, p: i });
      for (const w of waiters.splice(0)) w();
    });
    return proc;
  });
  /** The first time every peer completed an all-reduce after `after` in an epoch above `epoch`. */
  const allDone = async (after: number, epoch: number): Promise<number> => {
    for (;;) {
      const done = [0, 1, 2].map((i) => ops.find((o) => o.p === i && o.t >= after && o.epoch > epoch)?.t);
      if (done.every((t) => t !== undefined)) return Math.max(...(done as number[]));
      await new Promise<void>((r) => waiters.push(r));
    }
  };
  await allDone(0, 0);
  const restart: number[] = [];
  const reachable: number[] = [];
  for (let i = 0; i < trials; i++) {
    await new Promise((r) => setTimeout(r, 300 + Math.random() * 700));
    const epoch = Math.max(...ops.map((o) => o.epoch));
    const t0 = Date.now();
    master.proc.kill('SIGKILL');
    await master.proc.exited;
    master = await startMaster(master.port);
    restart.push(master.at - t0);
    reachable.push((await allDone(master.at, epoch)) - master.at);
  }
  for (const p of procs) p.kill();
  master.proc.kill();
  return {
    trials,
    restartMs: { median: median(restart), worst: Math.max(...restart), all: restart },
    reachableToNextAllReduceMs: { median: median(reachable), worst: Math.max(...reachable), all: reachable },
  };
}

if (process.argv.includes('--peer')) {
  void peer(argValue('peer', ''), Number(argValue('mib', '16')));
} else {
  void main();
}
