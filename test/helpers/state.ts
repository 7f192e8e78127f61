// Shared-state transfers between engine peers (test/fixtures/engine-peer.ts) with the test playing the master:
// collect reports, elect, hand every peer the same decision, collect the results.
import { ElectionOptions, PeerStateReport, SyncDecision, SyncStrategy, electSharedState } from '../../lib/shared-state/election';
import { PeerHandle, configure, startPeer, stopAll } from './ring';

export type { EntrySpec } from '../fixtures/engine-peer';

/** An engine peer with its id in the group (`p<rank>`). */
export type StatePeer = PeerHandle & { id: string };

/** Starts n peers named p0..p(n-1). */
export async function startStatePeers(n: number, env?: Record<string, string>): Promise<StatePeer[]> {
  const peers = await Promise.all(Array.from({ length: n }, (_, i) => startPeer(i, env)));
  return peers.map((p, i) => Object.assign(p, { id: `p${i}` }));
}

/** Configures a static group of these peers, in this order, at `epoch`. */
export async function formGroup(peers: StatePeer[], epoch = 1): Promise<void> {
  await configure(peers, { epoch, members: peers.map((p) => p.id) });
}

/** Collects every peer's report (strategy per peer id, default enforcePopular). */
export async function collectReports(peers: StatePeer[], strategies: Record<string, SyncStrategy> = {}): Promise<PeerStateReport[]> {
  const replies = await Promise.all(peers.map((p) => p.request({ cmd: 'report', strategy: strategies[p.id] })));
  return replies.map((r) => r.report);
}

/** Elects and executes on every peer; returns the decision and each peer's reply (by id). */
export async function syncOnce(
  peers: StatePeer[],
  reports: PeerStateReport[],
  options: ElectionOptions & { tag?: number; timeoutMs?: number; decision?: SyncDecision } = {},
): Promise<{ decision: SyncDecision; replies: Record<string, any> }> {
  const decision = options.decision ?? electSharedState(reports, options);
  const replies = await Promise.all(peers.map((p) => p.request({ cmd: 'execute', decision, tag: options.tag ?? 100, timeoutMs: options.timeoutMs }, 120_000)));
  return { decision, replies: Object.fromEntries(peers.map((p, i) => [p.id, replies[i]])) };
}

export { stopAll as stopStatePeers };
