#!/usr/bin/env node
/**
 * Churn stress: `npm run stress -- --duration S --max-peers N [--seed X] [--elements E]`.
 *
 * An in-process master and peer processes. It starts 2 peers, then every 0.5-2 s spawns a peer (60%) or SIGKILLs
 * one (40%, only while at least 3 are alive). Every peer loops: all-reduce a vector derived from (its id, step),
 * check the result against the sum over the participants of that operation, report a hash; then vote
 * (updateTopology) so newcomers get in. The run fails on any wrong result, any two participants holding
 * different bytes for one operation, any survivor crashing or being dropped, or 30 s without a completed
 * operation. Prints a JSON summary (operations, kills survived, longest stall); `--json FILE` also writes it.
 *
 * `--master-kills`: the master runs in its own process (test/fixtures/master-process.ts), is SIGKILLed every 20-40 s
 * and started again on the same port 0.5-1.5 s later; the peers must resume (docs/master.md, "Restart and
 * fail-over") and the checks stay the same. The summary adds the kills and, per kill, the time from the new
 * master being reachable to the first completed all-reduce.
 *
 * The run has a random run token, so the control plane is encrypted (docs/security.md, "Encryption");
 * `--no-token` runs it without one.
 *
 * With `--peer host:port` this file is a peer process instead (used by the orchestrator).
 *
 * `--sequence N [--seed S]` runs the randomized back-to-back operation sequence instead (scripts/sequence-stress.ts).
 */
import { createHash, randomBytes } from 'node:crypto';
import { Master } from '../lib/master/master';
import { Communicator } from '../lib/peer/communicator';
import { TcclError } from '../lib/errors';
import * as fs from 'node:fs';
import { argValue, machineInfo } from '../bench/common';
import { PeerProcess } from '../test/harness/process';
import { say } from '../test/harness/runner';
import { progress } from '../bench/progress';

/** Element i of peer `id`'s contribution at `step`: small integers, so float32 sums are exact. */
function contribution(id: number, step: number, i: number): number {
  return (id * 7919 + step * 104729 + i * 31) % 1000;
}

async function runPeer(master: string): Promise<void> {
  const n = Number(argValue('elements', '4096'));
  const comm = await Communicator.connect({ master, token: process.env.TCCL_STRESS_TOKEN || undefined, connections: 2, listenHost: '127.0.0.1', logLevel: 'error', timeoutMs: 120_000 });
  const me = Number(comm.id.slice(1));
  say({ ev: 'ready', id: comm.id });
  // Every member of an epoch agrees on (epoch, iteration since the epoch began): that is the step.
  let epoch = comm.currentEpoch;
  let iter = 0;
  for (;;) {
    const step = epoch * 1_000_000 + iter;
    const members = comm.members;
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = contribution(me, step, i);
    // Elements 0 and 1 carry (iteration, epoch): a participant that started the operation with another view of
    // the step (a re-form raced with the vote) shows up there, and that operation is counted as unverified.
    data[0] = iter % 4096;
    data[1] = epoch % 4096;
    try {
      const r = await comm.allReduce(data, { timeoutMs: 20_000 });
      const agreed = data[0] === r.worldSize * (iter % 4096) && data[1] === r.worldSize * (epoch % 4096);
      const ids = (r.epoch === comm.currentEpoch ? comm.members : members).map((m) => Number(m.slice(1)));
      if (agreed && ids.length === r.worldSize) {
        let bad = -1;
        for (let i = 2; i < n && bad < 0; i++) {
          let want = 0;
          for (const id of ids) want += contribution(id, step, i);
          if (data[i] !== want) bad = i;
        }
        if (bad >= 0) say({ ev: 'wrong', id: comm.id, epoch: r.epoch, step, index: bad, got: data[bad], members: ids });
      } else {
        say({ ev: 'unverified', id: comm.id });
      }
      say({ ev: 'op', id: comm.id, epoch: r.epoch, step, world: r.worldSize, hash: createHash('sha256').update(data).digest('hex').slice(0, 16) });
    } catch (err) {
      if (!(err instanceof TcclError) || !err.retryable) throw err;
      say({ ev: 'retry', id: comm.id, code: err.code });
    }
    const e = (await comm.updateTopology({ timeoutMs: 60_000 })).epoch;
    iter = e === epoch ? iter + 1 : 0;
    epoch = e;
  }
}

interface Child {
  proc: PeerProcess;
  id?: string;
  killed: boolean;
}

async function orchestrate(): Promise<number> {
  const durationS = Number(argValue('duration', '60'));
  const maxPeers = Number(argValue('max-peers', '6'));
  let seed = Number(argValue('seed', String(Date.now() % 100000)));
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
  const token = process.argv.includes('--no-token') ? undefined : randomBytes(16).toString('hex');
  const masterOptions = { logLevel: (argValue('log-level') as never) ?? 'warn', peerTimeoutMs: 2000, heartbeatIntervalMs: 250, token };
  const masterKills = process.argv.includes('--master-kills');
  let master: Master | undefined;
  let masterProc: PeerProcess | undefined;
  let port: number;
  const startMasterProc = async (p: number) => {
    const proc = new PeerProcess('test/fixtures/master-process.ts', { argv: [JSON.stringify({ ...masterOptions, port: p })] });
    const r = await proc.ready;
    if (r.ev !== 'ready') throw new Error(`the master process did not start: ${proc.stderr}`);
    return { proc, port: r.port as number };
  };
  if (masterKills) ({ proc: masterProc, port } = await startMasterProc(0));
  else port = await (master = new Master(masterOptions)).listen();
  let masterDown = false;
  let killsOfMaster = 0;
  let nextMasterKill = Date.now() + 20_000 + rand() * 20_000;
  /** When the restarted master was reachable, until the first operation after it completes. */
  let masterBackAt: number | undefined;
  const firstOpAfterMasterMs: number[] = [];
  const children = new Set<Child>();
  const hashes = new Map<string, string>();
  const failures: string[] = [];
  let ops = 0, kills = 0, spawns = 0, retries = 0, unverified = 0;
  let lastOp = Date.now();
  let longestStallMs = 0;
  let longestStallEnded = '';
  const start = Date.now();

  const spawnPeer = () => {
    const proc = new PeerProcess(__filename, { argv: ['--peer', `127.0.0.1:${port}`, '--elements', argValue('elements', '4096')!], env: { TCCL_LOG_LEVEL: 'error', TCCL_STRESS_TOKEN: token ?? '' } });
    const c: Child = { proc, killed: false };
    children.add(c);
    spawns++;
    proc.on('event', (m: { ev: string; id: string; epoch?: number; step?: number; hash?: string; world?: number }) => {
      const line = JSON.stringify(m);
      if (m.ev === 'ready') c.id = m.id;
      else if (m.ev === 'retry') retries++;
      else if (m.ev === 'unverified') unverified++;
      else if (m.ev === 'wrong') failures.push(`wrong result: ${line}`);
      else if (m.ev === 'op') {
        ops++;
        const now = Date.now();
        if (now - lastOp > longestStallMs) {
          longestStallMs = now - lastOp;
          longestStallEnded = new Date(now).toISOString();
        }
        lastOp = now;
        if (masterBackAt !== undefined) {
          firstOpAfterMasterMs.push(now - masterBackAt);
          masterBackAt = undefined;
        }
        const key = `${m.epoch}/${m.step}`;
        const seen = hashes.get(key);
        if (seen === undefined) hashes.set(key, m.hash!);
        else if (seen !== m.hash) failures.push(`peers hold different bytes for epoch ${m.epoch} step ${m.step}`);
      }
    });
    void proc.exited.then((code) => {
      children.delete(c);
      if (!c.killed) failures.push(`peer ${c.id ?? proc.pid} died on its own (code ${code}, signal ${proc.child.signalCode}): ${proc.stderr.slice(-2000)}`);
    });
  };

  spawnPeer();
  spawnPeer();
  const deadline = start + durationS * 1000;
  const bar = progress(durationS, 's');
  while (Date.now() < deadline && failures.length === 0) {
    bar.update(Math.floor((Date.now() - start) / 1000), `${ops} ops, ${children.size} peers, ${kills} killed`);
    await new Promise((r) => setTimeout(r, 500 + rand() * 1500));
    // Not while a new peer is still registering: its connect() would fail (it has no session to resume yet).
    const registering = [...children].some((c) => !c.killed && c.id === undefined);
    if (masterKills && masterProc && !registering && Date.now() >= nextMasterKill && Date.now() < deadline - 5000) {
      masterProc.kill('SIGKILL');
      await masterProc.exited;
      masterDown = true;
      killsOfMaster++;
      await new Promise((r) => setTimeout(r, 500 + rand() * 1000));
      masterProc = (await startMasterProc(port)).proc;
      masterBackAt = Date.now();
      masterDown = false;
      nextMasterKill = Date.now() + 20_000 + rand() * 20_000;
      lastOp = Math.max(lastOp, masterBackAt);
      continue;
    }
    const alive = [...children].filter((c) => !c.killed);
    if (rand() < 0.6) {
      if (alive.length < maxPeers && !masterDown) spawnPeer();
    } else if (alive.length >= 3) {
      const victim = alive[Math.floor(rand() * alive.length)];
      victim.killed = true;
      victim.proc.kill();
      kills++;
    }
    if (Date.now() - lastOp > 30_000) failures.push('no completed operation for 30 s');
  }
  bar.stop();
  longestStallMs = Math.max(longestStallMs, Date.now() - lastOp);
  for (const c of children) {
    c.killed = true;
    c.proc.kill();
  }
  await master?.close();
  await masterProc?.stop();
  if (masterKills && killsOfMaster === 0) failures.push('--master-kills: the run was too short to kill the master (give --duration 30 or more)');
  const sorted = [...firstOpAfterMasterMs].sort((a, b) => a - b);
  const summary = {
    durationS, maxPeers, controlEncrypted: token !== undefined, operationsCompleted: ops, distinctOperations: hashes.size, spawns, killsSurvived: kills, retries, unverified, longestStallMs, longestStallEnded,
    ...(masterKills ? { masterKills: killsOfMaster, firstOpAfterMasterMs, firstOpAfterMasterMedianMs: sorted[Math.floor(sorted.length / 2)] ?? null } : {}),
    failures,
  };
  process.stdout.write(JSON.stringify(summary, null, 2) + '\n');
  const out = argValue('json');
  if (out) fs.writeFileSync(out, JSON.stringify({ machine: machineInfo(), ...summary }, null, 2) + '\n');
  process.stdout.write(failures.length === 0 && ops > 0 ? 'stress: PASS\n' : 'stress: FAIL\n');
  return failures.length === 0 && ops > 0 ? 0 : 1;
}

const peerMaster = argValue('peer');
const sequenceOps = argValue('sequence');
if (sequenceOps) {
  import('./sequence-stress').then(({ sequenceStress }) => sequenceStress(Number(sequenceOps), Number(argValue('seed', '11')))).then(
    (code) => process.exit(code),
    (err: Error) => {
      process.stderr.write(`${err.stack}\n`);
      process.exit(1);
    },
  );
} else if (peerMaster) {
  runPeer(peerMaster).catch((err: Error) => {
    process.stderr.write(`stress peer failed: ${err.stack}\n`);
    process.exit(1);
  });
} else {
  orchestrate().then((code) => process.exit(code), (err: Error) => {
    process.stderr.write(`${err.stack}\n`);
    process.exit(1);
  });
}
