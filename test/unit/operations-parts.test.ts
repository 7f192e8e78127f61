// The pieces behind /metrics, /status and the JSON logs, in-process with the coordinator's fake clock: drop
// reasons counted by kind from real coordinator scenarios, vote latency, run totals that never go down when a
// peer leaves, throughput from heartbeat counters, the shared-state revision from the feed, JSON log records.
import t from 'tap';
import { Logger } from '../../lib/log';
import { DROP_KINDS, createMetrics, dropKind } from '../../lib/master/metrics';
import { statusOf, MasterView } from '../../lib/master/status';
import { Telemetry } from '../../lib/master/telemetry';
import { emptyPeerStats } from '../../lib/protocol';
import { metricValue, parsePrometheus } from '../helpers/prometheus';
import { Sim } from '../helpers/coordinator-sim';

function setup() {
  const sim = new Sim();
  const telemetry = new Telemetry(sim.core.feed, () => sim.now);
  const view: MasterView = {
    address: '127.0.0.1:1', startedAt: sim.now, auth: false, telemetry,
    get counters() { return sim.core.feed.counters; },
    groupsInfo: () => sim.core.groupsInfo(),
    peer: (id) => sim.core.peer(id),
    events: (after) => sim.core.feed.recent(after),
  };
  const registry = createMetrics(view, (l) => sim.core.feed.subscribe(l));
  const scrape = async () => parsePrometheus(await registry.metrics());
  return { sim, telemetry, view, scrape };
}

t.test('drop reasons as the master words them, by kind', async (t) => {
  t.equal(dropKind('no heartbeat for 3012 ms (timeout 3000 ms)'), 'heartbeat_timeout');
  t.equal(dropKind('control connection closed'), 'connection_closed');
  t.equal(dropKind('control connection lost: read ECONNRESET'), 'connection_closed');
  t.equal(dropKind('protocol error: Unknown field "x" in a "vote" message'), 'protocol_error');
  t.equal(dropKind('JavaScript thread blocked for 300012 ms (jsHangTimeoutMs 300000)'), 'js_hung');
  t.equal(dropKind('a sendOnly peer disagreed'), 'other');

  const { sim, scrape } = setup();
  const [a, b, c, d] = sim.group(4);
  sim.say(a, { t: 'lost', epoch: sim.epoch(), peer: `${b}@127.0.0.1:4000`, message: 'connection reset' });
  sim.ack(a, c, d);
  sim.lose(c, 'no heartbeat for 2100 ms (timeout 2000 ms)');
  sim.ack(a);
  sim.advance(1500); // d never acknowledges the new ring
  let m = await scrape();
  t.equal(metricValue(m, 'tccl_peers_dropped_total', { reason: 'reported_lost' }), 1, 'a survivor\'s report');
  t.equal(metricValue(m, 'tccl_peers_dropped_total', { reason: 'heartbeat_timeout' }), 1, 'silence');
  t.equal(metricValue(m, 'tccl_peers_dropped_total', { reason: 'no_ack' }), 1, 'no ack in time (group.ts words it)');
  t.equal(metricValue(m, 'tccl_peers_dropped_total'), 3);
  t.same(m.get('tccl_peers_dropped_total')!.samples.map((s) => s.labels.reason).sort(), [...DROP_KINDS].sort(), 'every kind is exported, zeros included');
  t.equal(metricValue(m, 'tccl_peers', { state: 'member' }), 1);
  t.equal(metricValue(m, 'tccl_group_epoch', { group: '0' }), sim.epoch());
  sim.say(a, { t: 'bye' });
  m = await scrape();
  t.equal(metricValue(m, 'tccl_peers_left_total'), 1, 'a goodbye is not a drop');
  t.equal(metricValue(m, 'tccl_groups'), 0, 'the empty group is gone');
});

t.test('vote latency: from the first vote to the vote passing', async (t) => {
  const { sim, scrape } = setup();
  const [a, b] = sim.group(2);
  sim.say(a, { t: 'vote', id: 1 });
  sim.advance(40);
  sim.say(b, { t: 'vote', id: 1 });
  const m = await scrape();
  t.equal(metricValue(m, 'tccl_vote_duration_seconds_count'), 2, 'the vote that formed the pair, and this barrier');
  t.ok(Math.abs(metricValue(m, 'tccl_vote_duration_seconds_sum') - 0.04) < 1e-9, '40 ms for the barrier');
  t.equal(metricValue(m, 'tccl_vote_duration_seconds_bucket', { le: '0.05' }), 2);
  t.equal(metricValue(m, 'tccl_vote_duration_seconds_bucket', { le: '0.01' }), 1);
});

t.test('telemetry: throughput from heartbeat counters, totals that never go down, the revision from the feed', async (t) => {
  const { sim, telemetry, view, scrape } = setup();
  const [a, b] = sim.group(2);
  const stats = (bytes: number, us: number, sent: number) => ({ ...emptyPeerStats(), allReduces: 1, allReduceBytes: bytes, allReduceUs: us, bytesSent: sent, connections: 4 });
  telemetry.heartbeat(a, stats(0, 0, 0));
  telemetry.heartbeat(b, stats(0, 0, 0));
  sim.advance(1000);
  telemetry.heartbeat(a, stats(100e6, 500_000, 1000)); // 100 MB in 0.5 s of all-reducing
  telemetry.heartbeat(b, stats(100e6, 1_000_000, 2000));
  t.equal(telemetry.peer(a)!.throughput, 200e6);
  t.equal(telemetry.peer(b)!.throughput, 100e6);
  sim.advance(6000);
  telemetry.heartbeat(a, stats(100e6, 500_000, 1000));
  sim.advance(500);
  telemetry.heartbeat(a, stats(100e6, 500_000, 1000));
  t.equal(telemetry.peer(a)!.throughput, 0, 'nothing all-reduced in the last window');
  telemetry.heartbeat(a, { ...stats(1, 1, 999), connections: 4 });
  t.equal(telemetry.peer(a)!.stats.bytesSent, 1000, 'a counter never goes back');
  telemetry.sample(sim.core.groupsInfo());
  t.equal(telemetry.history().at(-1)!.groups['0'], 50e6, 'chart point: the members\' mean');

  const before = (await scrape());
  t.equal(metricValue(before, 'tccl_peer_bytes_sent_total'), 3000);
  t.equal(metricValue(before, 'tccl_peer_allreduce_throughput_bytes_per_second', { peer: b }), 100e6);
  sim.lose(b);
  telemetry.forget(b);
  const after = await scrape();
  t.equal(metricValue(after, 'tccl_peer_bytes_sent_total'), 3000, 'a departed peer\'s bytes stay in the total');
  t.equal(metricValue(after, 'tccl_peer_allreduces_total'), 2);

  sim.core.feed.emit('debug', 'shared state synced', { group: 0, revision: 7 });
  const s = statusOf(view, sim.now);
  t.equal(s.groups[0].stateRevision, 7);
  t.same(s.groups[0].ring, [a]);
  t.match(s.groups[0].members[0], { id: a, address: '127.0.0.1:4000', member: true, connections: 4, lastHeartbeatMsAgo: 0 });
  t.equal(metricValue(await scrape(), 'tccl_group_state_revision', { group: '0' }), 7);
  t.equal(s.peerTotals.bytesSent, 3000);
  t.notOk('connections' in s.peerTotals, 'gauges are not summed');
});

t.test('JSON logs carry the fields of the text lines', async (t) => {
  const text: string[] = [];
  const json: string[] = [];
  const fields = { peer: 'p3', group: 0, reason: 'no heartbeat for 3000 ms', err: new Error('boom'), big: 5n, gone: undefined };
  new Logger('master', 'info', 'info', (l) => text.push(l), 'text').warn('peer dropped', fields);
  new Logger('master', 'info', 'info', (l) => json.push(l), 'json').child('master').warn('peer dropped', fields);
  new Logger('master', 'warn', 'info', (l) => json.push(l), 'json').info('not shown');
  t.match(text[0], / WARN  master: peer dropped peer=p3 group=0 reason="no heartbeat for 3000 ms" err=boom big=5$/);
  t.equal(json.length, 1, 'the level filters JSON lines too');
  const r = JSON.parse(json[0]);
  t.match(r, { level: 'warn', component: 'master', msg: 'peer dropped', peer: 'p3', group: 0, reason: 'no heartbeat for 3000 ms', err: 'boom', big: '5' });
  t.notOk('gone' in r);
  t.ok(!Number.isNaN(Date.parse(r.time)));
  t.throws(() => new Logger('x', 'info', 'info', undefined, 'xml'), /Expected "logFormat" to be one of text, json, got "xml"/);
});
