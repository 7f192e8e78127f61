// A stranger floods a peer's data port with 20,000 half-open connections (one byte each, then silence, reconnecting
// as soon as one is closed) for 30 s from 100 loopback addresses, from two flooder processes of 10,000 each (so
// each stays under a hard descriptor limit of 20,000 without privileges; the target's limit is raised to the hard
// limit, at least the size of the flood, so that only the engine's own cap can keep it in bounds). The attacked peer must hold a bounded number of
// threads and descriptors, its group must go on all-reducing, and when another member is killed during the flood
// the survivors fail retryably and a re-formed group (with a newcomer that connects through the flood) succeeds.
import t from 'tap';
import { PeerProcess } from '../harness/process';
import { configure, PeerHandle, startPeer, stopAll } from '../helpers/ring';
import { floodSkipReason, hardFdLimit, sampleProcess, setFdLimit, watchProcess } from './limits';

const FLOOD = 20_000;
const FLOODERS = 2;
const HOLD_MS = 45_000; // at least the 30 s the issue asks for, with room for a re-form on a loaded machine
const FLOODER_FDS = FLOOD / FLOODERS + 1_000;
const MAX_HANDSHAKES = 512; // the engine's default
const TOKEN = 'flood-test-token';

const skip = floodSkipReason(FLOODER_FDS) ?? (hardFdLimit() < FLOOD ? `the hard descriptor limit (${hardFdLimit()}) is below the flood (${FLOOD})` : undefined);

type Round = { done: number; error?: { code?: string; message?: string }; ms: number };

async function round(group: PeerHandle[], count: number, size = 16_384): Promise<Round[]> {
  const replies = await Promise.all(group.map((p) => p.request({ cmd: 'repeat', count, size, timeoutMs: 20_000 }, 90_000)));
  return replies as unknown as Round[];
}

t.test('20,000 half-open connections on a data port: bounded threads and descriptors, the group goes on and re-forms', { skip }, async (t) => {
  const peers = await Promise.all([0, 1, 2].map((i) => startPeer(i)));
  const extra: PeerHandle[] = [];
  const flooders: PeerProcess[] = [];
  t.teardown(async () => {
    await Promise.all(flooders.map((f) => f.stop()));
    await stopAll([...peers, ...extra]);
  });
  await configure(peers, { token: TOKEN });
  const target = peers[0];
  setFdLimit(target.pid, hardFdLimit());

  // Unattacked: warm the links, take the baseline, and the rate of rounds of 10 all-reduces of 64 KiB.
  for (const r of await round(peers, 10)) t.equal(r.done, 10, 'warm-up round succeeds');
  const base = sampleProcess(target.pid);
  let t0 = performance.now();
  let calmRounds = 0;
  while (performance.now() - t0 < 3000) {
    const rs = await round(peers, 10);
    if (rs.every((r) => r.done === 10)) calmRounds++;
  }
  const calmRate = calmRounds / ((performance.now() - t0) / 1000);

  // The newcomer's process starts before the flood (a Node start takes seconds on a loaded machine); it dials and is
  // dialled only when the group re-forms, under the flood.
  const newcomer = await startPeer(2);
  extra.push(newcomer);
  for (let i = 0; i < FLOODERS; i++) flooders.push(new PeerProcess('test/fixtures/flooder.ts'));
  for (const f of flooders) {
    await f.ready;
    setFdLimit(f.pid, FLOODER_FDS);
  }
  const watch = watchProcess(target.pid);
  const flood = Promise.all(
    flooders.map((f, i) => f.request('flood', { port: target.port, count: FLOOD / FLOODERS, ms: HOLD_MS, sources: 50, sourceBase: 50 * i }, HOLD_MS + 60_000)),
  );
  const floodStart = performance.now();
  await new Promise((r) => setTimeout(r, 3000)); // let the flood build up

  // All-reduces go on under the flood.
  t0 = performance.now();
  let floodRounds = 0;
  let failedRounds = 0;
  while (performance.now() - t0 < 6000) {
    const rs = await round(peers, 10);
    if (rs.every((r) => r.done === 10)) floodRounds++;
    else failedRounds++;
  }
  const floodRate = floodRounds / ((performance.now() - t0) / 1000);
  t.ok(floodRounds >= 1, `all-reduces go on under the flood (${floodRounds} rounds of 10 in 6 s)`);
  t.equal(failedRounds, 0, 'no all-reduce fails under the flood');
  t.comment(`rounds of 10 all-reduces per second: ${calmRate.toFixed(1)} unattacked, ${floodRate.toFixed(1)} under the flood (${((100 * floodRate) / calmRate).toFixed(0)}%)`);

  // A member is killed during the flood: the survivors' operations fail retryably.
  const doomed = peers[2];
  const survivors = [peers[0], peers[1]];
  const pending = survivors.map((p) => p.request({ cmd: 'repeat', count: 100_000, size: 4096, timeoutMs: 20_000 }, 90_000));
  doomed.request({ cmd: 'repeat', count: 100_000, size: 4096 }, 90_000).catch(() => undefined);
  await new Promise((r) => setTimeout(r, 500));
  doomed.kill('SIGKILL');
  const lost = (await Promise.all(pending)) as unknown as Round[];
  for (const r of lost) t.equal(r.error?.code, 'PEER_LOST', `a survivor's operations fail with PEER_LOST (${r.error?.message})`);

  // The newcomer connects through the flood and the re-formed group all-reduces.
  const group = [peers[0], peers[1], newcomer];
  await configure(group, { token: TOKEN, epoch: 2 });
  for (const r of await round(group, 10)) t.equal(r.done, 10, `the re-formed group all-reduces under the flood (${r.error?.message ?? 'ok'})`);
  t.ok(performance.now() - floodStart < HOLD_MS, 'the group re-formed while the flood was still on');

  const perFlooder = (await flood) as unknown as { connects: number; peakOpen: number; closedByTarget: number; errors: number }[];
  const floodStats = { connects: 0, peakOpen: 0, closedByTarget: 0, errors: 0 };
  for (const f of perFlooder) for (const k of Object.keys(floodStats) as (keyof typeof floodStats)[]) floodStats[k] += f[k];
  watch.stop();
  const stats = (await target.request({ cmd: 'stats' })).stats;
  t.comment(`flooder: ${JSON.stringify(floodStats)}; target: ${JSON.stringify(stats)}; baseline ${JSON.stringify(base)}, peak ${JSON.stringify(watch.peak)}`);
  t.ok(floodStats.connects >= FLOOD, `the flooder connected at least ${FLOOD} times (${floodStats.connects})`);
  t.ok(watch.peak.threads <= base.threads + 16, `peak threads ${watch.peak.threads} <= baseline ${base.threads} + 16`);
  t.ok(watch.peak.fds <= base.fds + MAX_HANDSHAKES + 64, `peak descriptors ${watch.peak.fds} <= baseline ${base.fds} + ${MAX_HANDSHAKES} + 64`);
  t.ok(stats.handshakesEvicted + stats.handshakesRefused > 0, 'the flood connections were evicted or timed out');
  t.equal(stats.internalErrors, 0, 'no internal error on a transport thread');
});
