/**
 * Prometheus metrics of a run (`GET /metrics`), through prom-client on a registry of the master's own (never
 * the global one, so two masters in a process do not mix). Gauges and counters are read from the master's
 * state when scraped; drops are counted by kind of reason, and vote latency is observed as votes pass. The
 * list with meanings is in docs/operations.md.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { monotonicMs } from '../clock';
import type { FeedEvent } from './feed';
import type { MasterView } from './status';

/** Kinds of drop reasons, the label values of `tccl_peers_dropped_total`. */
export const DROP_KINDS = ['heartbeat_timeout', 'connection_closed', 'protocol_error', 'reported_lost', 'no_ack', 'js_hung', 'other'] as const;
export type DropKind = (typeof DROP_KINDS)[number];

/** The kind of a drop reason as the master words it (master.ts, group.ts, sync.ts). */
export function dropKind(reason: string): DropKind {
  if (/^no heartbeat for /.test(reason)) return 'heartbeat_timeout';
  if (/^control connection (closed|lost)/.test(reason)) return 'connection_closed';
  if (/^protocol error/.test(reason)) return 'protocol_error';
  if (/^reported lost by /.test(reason)) return 'reported_lost';
  if (/^did not install epoch /.test(reason)) return 'no_ack';
  if (/^JavaScript thread blocked /.test(reason)) return 'js_hung';
  return 'other';
}

/** Builds the registry of one master; `subscribe` delivers its feed events (drops and votes are counted from them). */
export function createMetrics(view: MasterView, subscribe: (listener: (e: FeedEvent) => void) => void): Registry {
  const registers = [new Registry()];
  const [registry] = registers;
  /** A counter whose value is read from the master when scraped. */
  const counter = (name: string, help: string, read: () => number) =>
    new Counter({ name, help, registers, collect() { this.reset(); this.inc(read()); } });
  const gauge = (name: string, help: string, labelNames: string[], read: (g: Gauge) => void) =>
    new Gauge({ name, help, labelNames, registers, collect() { this.reset(); read(this); } });

  gauge('tccl_groups', 'Peer groups with at least one member or pending peer', [], (g) => g.set(view.groupsInfo().length));
  gauge('tccl_peers', 'Peers per group, accepted members and pending ones', ['group', 'state'], (g) => {
    for (const info of view.groupsInfo()) {
      g.set({ group: info.peerGroup, state: 'member' }, info.members.length);
      g.set({ group: info.peerGroup, state: 'pending' }, info.pending.length);
    }
  });
  gauge('tccl_group_epoch', 'Current epoch of each group (it grows with every change of the ring)', ['group'], (g) => {
    for (const info of view.groupsInfo()) g.set({ group: info.peerGroup }, info.epoch);
  });
  gauge('tccl_group_state_revision', 'Shared-state revision of each group after its last sync', ['group'], (g) => {
    for (const info of view.groupsInfo()) {
      const r = view.telemetry.revision(info.peerGroup);
      if (r !== undefined) g.set({ group: info.peerGroup }, r);
    }
  });
  gauge('tccl_peer_allreduce_throughput_bytes_per_second', 'All-reduce throughput each member reports over the last 5 s (payload bytes per second all-reducing)', ['group', 'peer', 'label'], (g) => {
    for (const info of view.groupsInfo()) {
      for (const id of info.members) g.set({ group: info.peerGroup, peer: id, label: view.peer(id)?.label ?? '' }, view.telemetry.peer(id)?.throughput ?? 0);
    }
  });
  gauge('tccl_peer_last_heartbeat_age_seconds', 'Seconds since each peer\'s last heartbeat', ['group', 'peer'], (g) => {
    const now = monotonicMs();
    for (const info of view.groupsInfo()) {
      for (const id of [...info.members, ...info.pending]) {
        const t = view.telemetry.peer(id);
        if (t) g.set({ group: info.peerGroup, peer: id }, (now - t.lastHeartbeat) / 1000);
      }
    }
  });
  gauge('tccl_master_start_time_seconds', 'When this master started (a change means the master restarted)', [], (g) => g.set(view.startedAt / 1000));

  const c = () => view.counters;
  counter('tccl_peers_joined_total', 'Peers that registered', () => c().peersJoined);
  counter('tccl_peers_accepted_total', 'Peers accepted into a ring (first of a group, or voted in)', () => c().peersAccepted);
  counter('tccl_peers_left_total', 'Peers that left on their own (closed their communicator)', () => c().peersLeft);
  counter('tccl_reforms_total', 'Ring changes (new epochs)', () => c().reforms);
  counter('tccl_ops_committed_total', 'Collective operations committed on every member', () => c().opsCommitted);
  counter('tccl_ops_aborted_total', 'Collective operations aborted on every member after a peer reported a failure', () => c().opsAborted);
  counter('tccl_ops_superseded_total', 'Operations in flight when their epoch ended (a peer was lost or joined)', () => c().opsSuperseded);
  counter('tccl_state_sync_retries_total', 'Shared-state syncs restarted after a member was lost', () => c().syncRetries);
  new Counter({
    name: 'tccl_state_syncs_total', help: 'Shared-state syncs, by result', labelNames: ['result'], registers,
    collect() { this.reset(); this.inc({ result: 'committed' }, c().syncsCommitted); this.inc({ result: 'failed' }, c().syncsFailed); },
  });
  new Counter({
    name: 'tccl_votes_total', help: 'Votes (updateTopology), by result', labelNames: ['result'], registers,
    collect() { this.reset(); this.inc({ result: 'passed' }, c().votesPassed); this.inc({ result: 'timed_out' }, c().votesTimedOut); },
  });

  // Reported by the peers on their heartbeats, summed over every peer the master has seen.
  const t = () => view.telemetry.totals();
  counter('tccl_peer_bytes_sent_total', 'Data-plane bytes the peers sent (all-reduce and shared-state transfers)', () => t().bytesSent);
  counter('tccl_peer_bytes_received_total', 'Data-plane bytes the peers received', () => t().bytesReceived);
  counter('tccl_peer_allreduces_total', 'All-reduces committed, counted on each peer', () => t().allReduces);
  counter('tccl_peer_allreduce_bytes_total', 'Payload bytes of those all-reduces', () => t().allReduceBytes);
  counter('tccl_peer_allreduce_seconds_total', 'Time the peers spent in them (rate of bytes over rate of seconds = throughput)', () => t().allReduceUs / 1e6);
  counter('tccl_peer_ops_failed_total', 'Operations that failed on a peer (retried or not)', () => t().opsFailed);
  counter('tccl_peer_state_syncs_total', 'Shared-state syncs committed, counted on each peer', () => t().syncs);
  counter('tccl_peer_state_transfers_total', 'Shared-state syncs in which a peer received entries', () => t().stateTransfers);
  counter('tccl_peer_state_bytes_received_total', 'Shared-state bytes the peers received', () => t().stateBytesReceived);
  counter('tccl_peer_master_reconnects_total', 'Times a peer lost the master (a master restart, a network cut) and resumed its session', () => t().reconnects);

  const drops = new Counter({ name: 'tccl_peers_dropped_total', help: 'Peers dropped by the master, by kind of reason', labelNames: ['reason'], registers });
  for (const k of DROP_KINDS) drops.inc({ reason: k }, 0);
  const votes = new Histogram({
    name: 'tccl_vote_duration_seconds', help: 'From the first vote of a group to the vote passing', registers,
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60],
  });
  subscribe((e) => {
    if (e.what === 'peer dropped' && typeof e.fields.reason === 'string') drops.inc({ reason: dropKind(e.fields.reason) });
    else if (e.what.startsWith('vote passed') && typeof e.fields.ms === 'number') votes.observe(e.fields.ms / 1000);
  });
  return registry;
}
