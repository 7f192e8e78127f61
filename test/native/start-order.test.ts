// Members of a static RingGroup started in any order: the group waits for the late ones (dialling them again with
// back-off) instead of failing with "Connection refused", and a member that never comes says how long it was tried.
import t from 'tap';
import { PeerProcess, freePorts } from '../harness/process';
import { rng } from '../helpers/data';

/** Runs test/fixtures/static-member.ts to its end (it closes its group itself) and returns the result it printed. */
async function member(rank: number, peers: string[], delayMs: number, retryMs: number): Promise<any> {
  const proc = new PeerProcess('test/fixtures/static-member.ts', { argv: [String(rank), peers.join(','), String(delayMs), String(retryMs)] });
  const timer = setTimeout(() => proc.kill(), 90_000);
  try {
    const r = await proc.next((e) => e.ev === 'result', 90_000);
    const code = await proc.exited; // not stopped early: its close() lets the others finish what it ran
    return r ?? { ok: false, message: `member ${rank} exited with ${code} before its result: ${proc.stderr}` };
  } finally {
    clearTimeout(timer);
  }
}

t.test('members started in random order and with delays form the group', async (t) => {
  const random = rng(7);
  for (const n of [2, 3, 4]) {
    const peers = (await freePorts(n)).map((p) => `127.0.0.1:${p}`);
    // Random start delays up to 2.5 s: early members dial ports nobody listens on yet.
    const delays = Array.from({ length: n }, () => Math.floor(random() * 2500));
    const results = await Promise.all(peers.map((_, rank) => member(rank, peers, delays[rank], 30_000)));
    const want = (n * (n + 1)) / 2;
    results.forEach((r, rank) => {
      t.ok(r.ok, `n=${n} member ${rank} (started after ${delays[rank]} ms) all-reduced${r.ok ? '' : `: ${r.message}`}`);
      if (r.ok) t.same([r.first, r.last, r.worldSize], [want, want, n], `n=${n} member ${rank} holds the sum`);
    });
  }
});

t.test('a member that never starts: the others give up after connectRetryMs and say how long they tried', async (t) => {
  const peers = (await freePorts(2)).map((p) => `127.0.0.1:${p}`);
  const r = await member(0, peers, 0, 1500);
  t.equal(r.ok, false, 'the all-reduce fails');
  t.equal(r.code, 'PEER_LOST', `PeerLostError: ${r.message}`);
  t.match(r.message, /cannot connect to rank1@127\.0\.0\.1:\d+ at 127\.0\.0\.1:\d+: .*\(tried for \d+ ms/, 'the message names the peer, the reason and how long');
  t.ok(r.ms >= 1000 && r.ms < 20_000, `it gave up after the retry window (${r.ms} ms), not at once and not at the op deadline`);
});
