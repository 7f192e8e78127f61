// A link that loses some of its K connections while nothing is in flight dials them again and the group goes on
// (a NAT that dropped idle mappings during a long inner phase), with bit-identical results afterwards; a loss while
// an operation is in flight, or a member that exits, still fails the operations with PEER_LOST.
// The connections from rank 0 to rank 1 go through a TCP relay in this process, which resets them on demand.
import t, { Test } from 'tap';
import * as net from 'node:net';
import { allReduceOn, startPeer, stopAll, PeerHandle } from '../helpers/ring';

const QUIET_MS = 1000; // the engines' redialQuietMs

interface Relay {
  port: number;
  pairs: { client: net.Socket; upstream: net.Socket }[];
  resetSome(n: number): number;
  close(): void;
}

function relayTo(port: number): Promise<Relay> {
  const pairs: Relay['pairs'] = [];
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: '127.0.0.1', port });
    const pair = { client, upstream };
    pairs.push(pair);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      pairs.splice(pairs.indexOf(pair) >>> 0, pairs.includes(pair) ? 1 : 0);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({
        port: (server.address() as net.AddressInfo).port,
        pairs,
        // Both ends get a reset, as from a NAT box that forgot the mapping.
        resetSome(n) {
          const victims = pairs.slice(0, n);
          for (const p of victims) {
            p.client.resetAndDestroy();
            p.upstream.resetAndDestroy();
          }
          return victims.length;
        },
        close() {
          for (const p of pairs) p.client.destroy(), p.upstream.destroy();
          server.close();
        },
      }),
    ),
  );
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const env = { TCCL_TEST_ENGINE_OPTIONS: JSON.stringify({ redialQuietMs: QUIET_MS }) };

async function pairThroughRelay(): Promise<{ peers: PeerHandle[]; relay: Relay }> {
  const peers = await Promise.all([startPeer(0, env), startPeer(1, env)]);
  const relay = await relayTo(peers[1].port);
  const addresses = [`127.0.0.1:${peers[0].port}`, `127.0.0.1:${relay.port}`];
  await Promise.all(peers.map((p, rank) => p.request({ cmd: 'configure', rank, peers: addresses, token: 'redial' })));
  return { peers, relay };
}

function sameAndOk(t: Test, results: any[][], label: string) {
  for (const r of results) t.ok(r[0].ok, `${label}: succeeded ${r[0].ok ? '' : r[0].code + ' ' + r[0].message}`);
  t.equal(new Set(results.map((r) => r[0].hash)).size, 1, `${label}: bit-identical results`);
}

t.test('connections reset while idle are dialled again; the group and its results go on', async (t) => {
  const { peers, relay } = await pairThroughRelay();
  t.teardown(async () => {
    relay.close();
    await stopAll(peers);
  });
  const op = { dtype: 'float32', op: 'sum', count: 300_000, seed: 3 };
  sameAndOk(t, await allReduceOn(peers, [op]), 'before');
  for (const round of [1, 2]) {
    await sleep(QUIET_MS + 500);
    const n = relay.resetSome(round);
    t.ok(n >= 1, `round ${round}: reset ${n} of rank 0's connections to rank 1`);
    await sleep(300);
    sameAndOk(t, await allReduceOn(peers, [{ ...op, seed: round }]), `after reset round ${round}`);
  }
  const stats = (await peers[0].request({ cmd: 'stats' })).stats;
  t.ok(stats.redials >= 3, `rank 0 dialled the lost connections again (${stats.redials})`);
});

t.test('a reset while an operation is in flight fails it retryably', async (t) => {
  const { peers, relay } = await pairThroughRelay();
  t.teardown(async () => {
    relay.close();
    await stopAll(peers);
  });
  const pending = peers.map((p) => p.request({ cmd: 'repeat', count: 100_000, size: 65_536, timeoutMs: 20_000 }, 90_000));
  await sleep(500);
  relay.resetSome(1);
  for (const r of (await Promise.all(pending)) as any[]) t.equal(r.error?.code, 'PEER_LOST', `fails with PEER_LOST (${r.error?.message})`);
});

t.test('a member that exits while everything is idle is still lost at once', async (t) => {
  const { peers, relay } = await pairThroughRelay();
  t.teardown(async () => {
    relay.close();
    await stopAll(peers);
  });
  sameAndOk(t, await allReduceOn(peers, [{ dtype: 'float32', op: 'sum', count: 1000 }]), 'before');
  await sleep(QUIET_MS + 500);
  peers[1].kill('SIGKILL');
  await peers[1].exited;
  const [r] = (await peers[0].request({ cmd: 'allreduce', ops: [{ dtype: 'float32', op: 'sum', count: 1000, timeoutMs: 60_000 }] })).results;
  t.equal(r.code, 'PEER_LOST', `the survivor's operation fails with PEER_LOST, not a timeout (${r.message})`);
});
