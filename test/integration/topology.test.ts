// optimizeTopology over the WAN emulator with heterogeneous links (test/harness/wan/regions.ts): peers in two
// regions that joined alternately get a ring that crosses between the regions exactly twice, with correct,
// bit-identical results before and after; a peer killed while the links are measured fails the call retryably
// on the survivors, who keep their order and go on; a group whose links are all alike keeps its order.
// Real master, real peer processes, real sockets through the user-space emulator (no root needed).
import t, { Test } from 'tap';
import { WanEmulator } from '../harness/wan/emulator';
import { RegionsSpec, crossings } from '../harness/wan/regions';
import { PeerEvent, PeerProcess, expectedFirst, waitFor } from '../helpers/communicator';
import { RegionGroup, startRegionGroup } from '../helpers/region-group';

const linux = process.platform === 'linux';
const skip = linux ? false : 'needs Linux: the WAN emulator uses epoll and 127.x.y.z addresses';
// Scaled down from 1 Gbit/s / 200 Mbit/s so that two cores carry it: 10 ms RTT inside, 80 ms between.
const TWO_REGIONS: RegionsSpec = { inside: { delayMs: 5, aggMbps: 400 }, between: { delayMs: 40, aggMbps: 80 }, betweenSharedMbps: 80 };
const OPTIMIZE = { maxProbeBytes: 4 << 20, timeoutMs: 90_000 };
const N = 262_144; // 1 MiB of float32

/** The group of test/helpers/region-group.ts, stopped in teardown. */
async function formGroup(t: Test, emu: WanEmulator, regionOf: number[], spec: RegionsSpec, block: number, count = regionOf.length): Promise<RegionGroup> {
  const g = await startRegionGroup(emu, regionOf, spec, block, { count });
  t.teardown(g.stop);
  t.same(g.master.groupsInfo()[0].members, g.ids, 'every host started is a member, in join order');
  return g;
}

/** One all-reduce on every peer: the exact sum, the same bytes everywhere. */
async function allReduceOk(t: Test, peers: PeerProcess[], tag: number, what: string): Promise<void> {
  const rs = await Promise.all(peers.map((p) => p.request('allReduce', { n: N, tag, timeoutMs: 60_000 }, 90_000)));
  t.ok(rs.every((r) => r.ok), `${what}: every all-reduce succeeded`);
  const values = peers.map((_, i) => i + 1);
  t.same(rs[0].first, expectedFirst(values, 0), `${what}: the sum of every input`);
  t.ok(rs.every((r) => r.hash === rs[0].hash), `${what}: bit-identical on every peer`);
}

t.test('six peers in two regions joined alternately: the ring crosses twice after optimizeTopology', { skip }, async (t) => {
  const emu = await WanEmulator.start();
  t.teardown(() => emu.close());
  const regionOf = [0, 1, 0, 1, 0, 1];
  const { master, peers, ids } = await formGroup(t, emu, regionOf, TWO_REGIONS, 50);
  const indexOf = (id: string) => ids.indexOf(id);
  t.equal(crossings(ids.map(indexOf), regionOf), 6, 'join order crosses at every link');
  await allReduceOk(t, peers, 1, 'join order');

  const t0 = performance.now();
  const rs = await Promise.all(peers.map((p) => p.request('optimize', OPTIMIZE, 120_000)));
  const ms = performance.now() - t0;
  for (const r of rs) t.ok(r.ok, `optimizeTopology succeeded${r.ok ? '' : `: ${r.code} ${r.message}`}`);
  const r = rs[0] as PeerEvent & { newOrder: string[]; oldOrder: string[]; matrix: { bandwidth: number[][]; rttMs: number[][] } };
  t.ok(rs.every((x) => x.applied === true), 'applied on every peer');
  t.ok(rs.every((x) => JSON.stringify(x.newOrder) === JSON.stringify(r.newOrder)), 'the same new order on every peer');
  t.same(r.oldOrder, ids);
  t.equal(crossings(r.newOrder.map(indexOf), regionOf), 2, `the new ring ${r.newOrder.join(',')} crosses between the regions twice`);
  t.same(master.groupsInfo()[0].members, r.newOrder, 'the master installed it');
  t.ok(rs.every((x) => JSON.stringify(x.members) === JSON.stringify(r.newOrder)), 'every peer runs the new ring');
  t.ok((r.predictedAfterMs as number) < (r.predictedBeforeMs as number) / 2, `predicted ${Number(r.predictedBeforeMs).toFixed(0)} -> ${Number(r.predictedAfterMs).toFixed(0)} ms`);

  // The measurements tell the regions apart: every link inside a region faster than every link between them.
  const inside: number[] = [];
  const between: number[] = [];
  r.matrix.bandwidth.forEach((row, i) => row.forEach((bw, j) => i !== j && (regionOf[i] === regionOf[j] ? inside : between).push(bw)));
  t.ok(Math.min(...inside) > Math.max(...between), `inside >= ${(Math.min(...inside) / 125e3).toFixed(0)} Mbit/s, between <= ${(Math.max(...between) / 125e3).toFixed(0)} Mbit/s`);
  const rttBetween = r.matrix.rttMs.flatMap((row, i) => row.filter((_, j) => i !== j && regionOf[i] !== regionOf[j]));
  t.ok(Math.min(...rttBetween) >= 70, `RTT between regions measured >= 70 ms (min ${Math.min(...rttBetween).toFixed(1)})`);
  t.comment(`measuring and solving 6 peers: ${ms.toFixed(0)} ms; peer 1 sent ${(Number(rs[0].measureBytes) / 2 ** 20).toFixed(1)} MiB measuring`);

  await allReduceOk(t, peers, 2, 'optimised order');
});

t.test('a peer killed while the links are measured: survivors fail retryably, keep their order, and go on', { skip }, async (t) => {
  const emu = await WanEmulator.start();
  t.teardown(() => emu.close());
  const regionOf = [0, 1, 0, 1];
  const { master, peers, ids } = await formGroup(t, emu, regionOf, TWO_REGIONS, 60);
  const calls = peers.map((p) => p.request('optimize', OPTIMIZE, 120_000));
  await new Promise((r) => setTimeout(r, 700)); // into the measurement (a few rounds of 80 ms pings)
  peers[3].kill('SIGKILL');
  const rs = await Promise.all(calls.slice(0, 3));
  for (const r of rs) {
    t.equal(r.ok, false, 'the call failed');
    t.equal(r.name, 'PeerLostError', `a retryable PeerLostError: ${r.message}`);
  }
  await waitFor(() => master.groupsInfo()[0].members.length === 3, 20_000, 'the killed peer dropped');
  t.same(master.groupsInfo()[0].members, ids.slice(0, 3), 'the survivors keep their order');
  await allReduceOk(t, peers.slice(0, 3), 3, 'survivors');
});

t.test('every link alike: the order is kept', { skip }, async (t) => {
  const emu = await WanEmulator.start();
  t.teardown(() => emu.close());
  const link = { delayMs: 10, aggMbps: 200 };
  const regionOf = [0, 0, 0, 0];
  const { master, peers, ids } = await formGroup(t, emu, regionOf, { inside: link, between: link }, 70);
  const epoch = master.groupsInfo()[0].epoch;
  const rs = await Promise.all(peers.map((p) => p.request('optimize', OPTIMIZE, 120_000)));
  for (const r of rs) t.match(r, { ok: true, applied: false }, 'not applied');
  t.same(rs[0].newOrder, ids);
  t.equal(master.groupsInfo()[0].epoch, epoch, 'no re-form');
  t.comment(`predicted ${Number(rs[0].predictedBeforeMs).toFixed(1)} ms in join order; best found ${Number(rs[0].predictedAfterMs).toFixed(1)} ms`);
  await allReduceOk(t, peers, 4, 'after');
});

t.test('a joiner is measured against the members and placed: only its pairs are measured', { skip }, async (t) => {
  const emu = await WanEmulator.start();
  t.teardown(() => emu.close());
  // Hosts 0..4 are set up; host 4 (region 1) joins after the first optimisation.
  const regionOf = [0, 1, 0, 1, 1];
  const g = await formGroup(t, emu, regionOf, TWO_REGIONS, 80, 4);
  const { master, peers, ids } = g;
  const first = await Promise.all(peers.slice(0, 4).map((p) => p.request('optimize', { ...OPTIMIZE, maxAgeMs: 600_000 }, 120_000)));
  t.ok(first.every((r) => r.ok && r.applied), 'the first four are re-ordered');
  const all = master.groupsInfo()[0].members;
  t.equal(crossings(all.map((id) => ids.indexOf(id)), regionOf), 2);

  // The newcomer: voted in (it lands at the end of the ring), then measured and placed.
  const firstDone = performance.now();
  const joiner = await g.join(4);
  const joinedOrder = master.groupsInfo()[0].members;
  const rs = await Promise.all(peers.map((p) => p.request('optimize', { ...OPTIMIZE, maxAgeMs: 600_000 }, 120_000)));
  for (const r of rs) t.ok(r.ok, `optimizeTopology succeeded${r.ok ? '' : `: ${r.code} ${r.message}`}`);
  const elapsed = performance.now() - firstDone;
  const r = rs[0] as PeerEvent & { newOrder: string[]; matrix: { peers: string[]; ageMs: number[][] } };
  const order = r.applied ? r.newOrder : joinedOrder;
  t.equal(crossings(order.map((id) => [...ids, joiner].indexOf(id)), regionOf), 2, `ring ${order.join(',')} still crosses twice`);
  // Only pairs with the newcomer were measured this time: every other pair is as old as the first round.
  const ji = r.matrix.peers.indexOf(joiner);
  r.matrix.ageMs.forEach((row, i) => row.forEach((age, j) => {
    if (i === j) return;
    if (i === ji || j === ji) t.ok(age < 60_000, `${i}->${j} measured now`);
  }));
  const old = r.matrix.ageMs.flatMap((row, i) => row.filter((_, j) => i !== j && i !== ji && j !== ji));
  t.ok(Math.min(...old) >= elapsed - 1000, `the members' pairs were not measured again (ages >= ${Math.min(...old).toFixed(0)} ms, ${elapsed.toFixed(0)} ms since the first round)`);
  t.ok(Number(rs[1].measureBytes) < Number(first[1].measureBytes), `a member sent less measuring (${rs[1].measureBytes} < ${first[1].measureBytes} bytes)`);
  await allReduceOk(t, peers, 5, 'with the joiner');
});
