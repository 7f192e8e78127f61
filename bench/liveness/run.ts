#!/usr/bin/env node
/**
 * Liveness bench: `node --import tsx bench/liveness/run.ts [--trials 7] [--busy-ms 20000]` (npm run bench:liveness).
 *
 * A master at its defaults (heartbeat 500 ms, peer timeout 3000 ms) and peer processes
 * (test/fixtures/communicator-peer.ts). Each trial votes a fresh peer into the group, SIGSTOPs it and measures
 * the time from the signal to the master's drop (its feed event), which the design bounds by the peer timeout
 * plus one heartbeat interval (3.5 s). Then one peer blocks its JavaScript thread for `--busy-ms` and the bench
 * checks it is still a member afterwards and all-reduces with the full group. Prints JSON (medians, extremes)
 * and writes bench/results/liveness.json.
 */
import { Master } from '../../lib/master/master';
import { PeerProcess, startPeer, waitFor } from '../../test/helpers/communicator';
import { argValue, machineInfo, median, writeResult } from '../common';

async function main(): Promise<void> {
  const trials = Number(argValue('trials', '7'));
  const busyMs = Number(argValue('busy-ms', '20000'));
  const master = new Master({ logLevel: 'error' });
  const port = await master.listen();
  const address = `127.0.0.1:${port}`;
  const procs: PeerProcess[] = [];
  const spawn = (value: number) => {
    const p = startPeer({ master: address, value, connections: 2 });
    procs.push(p);
    return p;
  };
  const members = () => master.groupsInfo()[0]?.members ?? [];
  try {
    const anchor = spawn(1);
    await anchor.ready;
    const dropMs: number[] = [];
    for (let i = 0; i < trials; i++) {
      const p = spawn(2 + i);
      await waitFor(() => (master.groupsInfo()[0]?.pending.length ?? 0) === 1, 30_000, 'the new peer pending');
      await anchor.request('updateTopology', {}, 30_000);
      const id = String((await p.ready).id);
      await waitFor(() => members().includes(id), 30_000, 'the new peer a member');
      // Settle: a heartbeat or two both ways, so the stop lands at a random phase of the heartbeat period.
      await new Promise((r) => setTimeout(r, 700 + Math.random() * 500));
      const stoppedAt = Date.now();
      p.kill('SIGSTOP');
      await waitFor(() => !members().includes(id), 60_000, 'the stopped peer dropped');
      const drop = master.events().find((e) => e.what === 'peer dropped' && e.fields.peer === id);
      dropMs.push((drop?.at ?? Date.now()) - stoppedAt);
      await p.stop();
    }

    // A busy JavaScript thread is not a failure: the peer stays and all-reduces with the group afterwards.
    const busy = spawn(100);
    await waitFor(() => (master.groupsInfo()[0]?.pending.length ?? 0) === 1, 30_000, 'the busy peer pending');
    await anchor.request('updateTopology', {}, 30_000);
    const busyId = String((await busy.ready).id);
    const blocked = await busy.request('block', { ms: busyMs }, busyMs + 60_000);
    const kept = members().includes(busyId);
    const rs = await Promise.all([anchor, busy].map((q) => q.request('allReduce', { n: 1024 }, 60_000)));

    const result = {
      bench: 'liveness',
      command: 'node --import tsx bench/liveness/run.ts',
      master: { heartbeatIntervalMs: master.heartbeatIntervalMs, peerTimeoutMs: master.peerTimeoutMs },
      sigstopToDropMs: { trials, median: median(dropMs), min: Math.min(...dropMs), max: Math.max(...dropMs), all: dropMs },
      boundMs: master.peerTimeoutMs + master.heartbeatIntervalMs,
      busy: { blockedMs: busyMs, ok: blocked.ok === true, stillMember: kept, allReduceAfter: rs.every((r) => r.ok && r.worldSize === 2) },
      machine: machineInfo(),
    };
    writeResult('liveness', result);
    console.log(JSON.stringify(result, null, 2));
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
    await master.close();
  }
}

void main().catch((err) => {
  console.error(err);
  process.exit(1);
});
