/**
 * Control-plane timings over the emulated WAN: updateTopology (a join by vote, and a barrier with nobody
 * pending) and a 4 KiB all-reduce through the Communicator, with the master and every peer on distinct
 * addresses reached only through the emulator. In-process master and Communicators.
 */
import { Master } from '../../lib/master/master';
import { Communicator } from '../../lib/peer/communicator';
import { LinkSpec, WanEmulator } from '../../test/harness/wan/emulator';

export interface TopologyTimings {
  peers: number;
  /** Time for the members' updateTopology() calls to resolve and the newcomer's connect() to resolve. */
  joinMs: Array<{ worldAfter: number; ms: number }>;
  /** updateTopology with nobody pending (a barrier), median of several. */
  barrierMs: number;
  barrierSamplesMs: number[];
  /** 4 KiB all-reduce through the Communicator, median of several. */
  allReduce4KiBMs: number;
  allReduceSamplesMs: number[];
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export async function timeTopology(emu: WanEmulator, n: number, link: LinkSpec, samples = 5): Promise<TopologyTimings> {
  const master = new Master({ host: '127.0.36.1', logLevel: 'error' });
  const masterPort = await master.listen();
  await emu.setLink(201, link);
  await emu.setLink(202, link);
  const mr = await emu.addRoute({ listenHost: '127.0.37.1', targetHost: '127.0.36.1', targetPort: masterPort, fwdLink: 201, revLink: 202 });
  const routes = [mr.id];
  const comms: Communicator[] = [];
  const joinMs: TopologyTimings['joinMs'] = [];
  try {
    for (let v = 0; v < n; v++) {
      await emu.setLink(210 + v, link);
      await emu.setLink(230 + v, link);
      const r = await emu.addRoute({
        listenHost: `127.0.38.${v + 1}`,
        targetHost: `127.0.39.${v + 1}`,
        targetPort: 0,
        fwdLink: 210 + v,
        revLink: 230 + v,
      });
      routes.push(r.id);
      const joining = Communicator.connect({
        master: `127.0.37.1:${mr.port}`,
        listenHost: `127.0.39.${v + 1}`,
        dataPort: r.port,
        advertiseAddress: `127.0.38.${v + 1}`,
        connections: 4,
        logLevel: 'error',
        timeoutMs: 60_000,
      });
      if (v === 0) {
        comms.push(await joining);
        continue;
      }
      await waitFor(() => master.groupsInfo()[0]?.pending.length === 1, 30_000, 'the newcomer to be pending');
      const t0 = performance.now();
      const [, c] = await Promise.all([Promise.all(comms.map((x) => x.updateTopology())), joining]);
      joinMs.push({ worldAfter: v + 1, ms: performance.now() - t0 });
      comms.push(c);
    }
    const barrier: number[] = [];
    for (let i = 0; i < samples; i++) {
      const t0 = performance.now();
      await Promise.all(comms.map((x) => x.updateTopology()));
      barrier.push(performance.now() - t0);
    }
    const ar: number[] = [];
    const bufs = comms.map(() => new Float32Array(1024).fill(1));
    // First one opens the data links.
    await Promise.all(comms.map((x, i) => x.allReduce(bufs[i], { tag: 1 })));
    for (let i = 0; i < samples; i++) {
      const t0 = performance.now();
      await Promise.all(comms.map((x, j) => x.allReduce(bufs[j], { tag: 1 })));
      ar.push(performance.now() - t0);
    }
    return { peers: n, joinMs, barrierMs: median(barrier), barrierSamplesMs: barrier, allReduce4KiBMs: median(ar), allReduceSamplesMs: ar };
  } finally {
    await Promise.all(comms.map((c) => c.close().catch(() => undefined)));
    await master.close();
    for (const id of routes) await emu.removeRoute(id).catch(() => undefined);
  }
}
