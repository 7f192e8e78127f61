// Workers of different speeds (issue 25): one of four DiLoCo workers runs at a third of the others' speed. In
// lockstep (innerSteps only) the fast ones wait for it at every outer sync; with innerSeconds each inner phase
// ends by time, the slow worker contributes fewer steps (weighted accordingly) and the group processes at least
// 1.5x the tokens per second. Inner steps are sleeps (30 ms vs 90 ms), so the ratio holds on a loaded machine.
import t from 'tap';
import { Master } from '../../lib/master/master';
import { PeerProcess } from '../harness/process';

t.test('innerSeconds: the group\'s tokens per second are at least 1.5x lockstep\'s with one worker 3x slower', async (t) => {
  const master = new Master({ logLevel: 'error', heartbeatIntervalMs: 200, peerTimeoutMs: 5000 });
  const port = await master.listen();
  const workers = Array.from({ length: 4 }, () => new PeerProcess('test/fixtures/speed-worker.ts'));
  t.teardown(async () => {
    await Promise.all(workers.map((w) => w.stop()));
    await master.close();
  });
  await Promise.all(workers.map((w) => w.ready));
  const stepMs = [30, 30, 30, 90];
  const run = async (group: number, extra: object) => {
    const rs = await Promise.all(workers.map((w, i) => w.request('run', {
      master: `127.0.0.1:${port}`, group, world: 4, stepMs: stepMs[i], tokens: 512, outerSteps: 3, ...extra,
    }, 120_000)));
    for (const r of rs) t.notOk(r.thrown, String(r.message ?? 'trained'));
    const tokens = rs.reduce((s, r) => s + (r.tokens as number), 0);
    const seconds = (Math.max(...rs.map((r) => r.end as number)) - Math.min(...rs.map((r) => r.start as number))) / 1000;
    return { rate: tokens / seconds, rs };
  };
  const lockstep = await run(1, { innerSteps: 15 });
  const timed = await run(2, { innerSteps: 1000, innerSeconds: 0.45 });
  const slow = timed.rs[3].roundSteps as number[];
  const fast = timed.rs[0].roundSteps as number[];
  t.ok(slow.every((s, k) => s < fast[k]), `the slow worker did fewer inner steps per phase (${slow} vs ${fast})`);
  t.ok(timed.rate >= 1.5 * lockstep.rate, `tokens/s with innerSeconds ${timed.rate.toFixed(0)} >= 1.5 x lockstep ${lockstep.rate.toFixed(0)}`);
  t.comment(`tokens/s: lockstep ${lockstep.rate.toFixed(0)}, innerSeconds ${timed.rate.toFixed(0)} (${(timed.rate / lockstep.rate).toFixed(2)}x)`);
});
