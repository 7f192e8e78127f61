// A master and one communicator peer process per emulated host (test/harness/wan/regions.ts), accepted one at a
// time so that the ring starts in host order: the setup of the topology tests and of bench/topology.
import { Master } from '../../lib/master/master';
import type { WanEmulator } from '../harness/wan/emulator';
import { RegionsSpec, regionWan } from '../harness/wan/regions';
import { PeerProcess, startPeer, waitFor } from './communicator';

export interface RegionGroup {
  master: Master;
  /** Peer i runs on host i and contributes value i + 1. */
  peers: PeerProcess[];
  /** Master ids in join (host) order. */
  ids: string[];
  stop(): Promise<void>;
}

export async function startRegionGroup(
  emu: WanEmulator, regionOf: number[], spec: RegionsSpec, block: number, connections = 2,
): Promise<RegionGroup> {
  const master = new Master({ logLevel: 'warn' });
  const peers: PeerProcess[] = [];
  const stop = async () => {
    await Promise.all(peers.map((p) => p.stop()));
    await master.close();
  };
  try {
    await master.listen();
    const hosts = await regionWan(emu, regionOf, spec, block);
    for (let i = 0; i < regionOf.length; i++) {
      const p = startPeer({ master: master.address, ...hosts[i], connections, value: i + 1, label: `r${regionOf[i]}h${i}` });
      peers.push(p);
      if (i === 0) {
        const ready = await p.ready;
        if (ready.ev !== 'ready') throw new Error(`the first peer did not start: ${JSON.stringify(ready)}`);
        continue;
      }
      await waitFor(() => master.groupsInfo()[0]?.pending.length === 1, 20_000, `host ${i} pending`);
      await Promise.all([...peers.slice(0, i).map((q) => q.request('updateTopology', {}, 30_000)), p.ready]);
    }
    return { master, peers, ids: master.groupsInfo()[0].members, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
