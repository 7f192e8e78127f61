// A master and one communicator peer process per emulated host (test/harness/wan/regions.ts), accepted one at a
// time so that the ring starts in host order: the setup of the topology tests and of bench/topology.
import { Master, MasterOptions } from '../../lib/master/master';
import type { WanEmulator } from '../harness/wan/emulator';
import { RegionsSpec, regionWan } from '../harness/wan/regions';
import { PeerProcess, startPeer, waitFor } from './communicator';

export interface RegionGroup {
  master: Master;
  /** Peer i runs on host i and contributes value i + 1. */
  peers: PeerProcess[];
  /** Master ids in join (host) order. */
  ids: string[];
  /** Starts host i's peer and has the members vote it in; resolves with its master id. */
  join(i: number): Promise<string>;
  stop(): Promise<void>;
}

/** Sets up every host of `regionOf` and starts the first `count` of them (the others can `join` later). */
export async function startRegionGroup(
  emu: WanEmulator, regionOf: number[], spec: RegionsSpec, block: number,
  options: { connections?: number; count?: number; master?: MasterOptions } = {},
): Promise<RegionGroup> {
  const connections = options.connections ?? 2;
  const count = options.count ?? regionOf.length;
  const master = new Master({ logLevel: 'warn', ...options.master });
  const peers: PeerProcess[] = [];
  const stop = async () => {
    await Promise.all(peers.map((p) => p.stop()));
    await master.close();
  };
  try {
    await master.listen();
    const hosts = await regionWan(emu, regionOf, spec, block);
    const join = async (i: number) => {
      const p = startPeer({ master: master.address, ...hosts[i], connections, value: i + 1, label: `r${regionOf[i]}h${i}` });
      const members = peers.slice();
      peers.push(p);
      if (members.length > 0) {
        await waitFor(() => master.groupsInfo()[0]?.pending.length === 1, 20_000, `host ${i} pending`);
        await Promise.all(members.map((q) => q.request('updateTopology', {}, 30_000)));
      }
      const ready = await p.ready;
      if (ready.ev !== 'ready') throw new Error(`host ${i} did not join: ${JSON.stringify(ready)}`);
      return String(ready.id);
    };
    // One at a time, so that the join order (and the ring) is host order.
    const ids: string[] = [];
    for (let i = 0; i < count; i++) ids.push(await join(i));
    return { master, peers, ids, join, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
