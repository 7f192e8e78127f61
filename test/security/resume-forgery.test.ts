// Issue 21: after a master restart, a holder of the run token with a valid session forges its resume report:
// epoch 2^53-1 (the next epoch would fail every peer's validation), then `epoch + 1, ring: [itself]` (the old
// rebuild left every other member out). The first is refused; the second evicts nobody; the run goes on.
import t from 'tap';
import { Master } from '../../lib/master/master';
import { Communicator } from '../../lib/peer/communicator';
import { ResumeReport, makeSessionId, parseSessionId, sessionSecret } from '../../lib/protocol';
import { RawClient } from './raw-client';

const TOKEN = 'resume-forgery-token';

async function until(what: string, ok: () => boolean, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Resumes `session` with `report`; resolves with the master's answer (welcome or error) and the client. */
async function forge(port: number, session: string, report: ResumeReport): Promise<{ answer: Record<string, unknown> | undefined; c: RawClient }> {
  const c = new RawClient(port);
  await c.authenticate(TOKEN, { session });
  c.send({ t: 'register', secret: sessionSecret(TOKEN, session), peerGroup: 0, dataPort: 9, resume: report });
  return { answer: await c.next('welcome'), c };
}

t.test('forged resume reports from a token holder are refused, and the run goes on', async (t) => {
  const opts = { logLevel: 'silent' as const, token: TOKEN, heartbeatIntervalMs: 100, peerTimeoutMs: 1500, resumeWindowMs: 6000 };
  const m1 = new Master(opts);
  const port = await m1.listen();
  const peerOpts = { master: `127.0.0.1:${port}`, token: TOKEN, connections: 1, logLevel: 'silent' as const, listenHost: '127.0.0.1', reconnectTimeoutMs: 30_000 };
  const a = await Communicator.connect(peerOpts);
  const bp = Communicator.connect(peerOpts);
  const cp = Communicator.connect(peerOpts);
  await until('both newcomers pending', () => m1.groupsInfo()[0]?.pending.length === 2);
  await a.updateTopology();
  const [b, c] = await Promise.all([bp, cp]);
  t.teardown(async () => { await Promise.all([a.close(), b.close(), c.close()]); });
  await until('three members', () => a.worldSize === 3 && b.worldSize === 3 && c.worldSize === 3);

  // The forger is a token holder: it joins another group to learn the run's id from its own session.
  const spy = new RawClient(port);
  await spy.authenticate(TOKEN);
  spy.send({ t: 'register', peerGroup: 7, dataPort: 9 });
  const welcome = await spy.next('welcome');
  const run = parseSessionId(String(welcome!.session))!.run;
  spy.close();
  const epoch = m1.groupsInfo().find((g) => g.peerGroup === 0)!.epoch;

  // The master restarts; c dies during the outage, so the rebuild waits for it and a and b report first.
  await m1.close({ endRun: false });
  await c.close();
  const m2 = new Master({ ...opts, port });
  await m2.listen();
  t.teardown(() => m2.close());
  const core = (m2 as unknown as { core: { rebuildsInfo(): { reported: string[] }[] } }).core;
  await until('a and b reported to the new master', () => (core.rebuildsInfo()[0]?.reported.length ?? 0) >= 2);

  const session = makeSessionId('p50', 0, run, '0011223344556677');
  const base: ResumeReport = {
    epoch: 0, member: true, ring: [{ id: 'p50@127.0.0.1:9', host: '127.0.0.1', port: 9 }], committed: [], lastSync: 0, committedSync: 0, committedRevision: 0, states: [],
  };
  const huge = await forge(port, session, { ...base, epoch: 2 ** 53 - 1 });
  t.match(huge.answer, { t: 'error', code: 'RESUME_REFUSED', message: /beyond any run/ }, 'epoch 2^53-1 is refused');
  const self = await forge(port, session, { ...base, epoch: epoch + 1 });
  t.equal(self.answer?.t, 'welcome', 'epoch + 1 is plausible (a crash during a re-form): taken as a report');
  await until('the group rebuilt', () => m2.groupsInfo().some((g) => g.peerGroup === 0));
  const g = m2.groupsInfo().find((x) => x.peerGroup === 0)!;
  t.ok(g.members.includes(a.id) || g.pending.includes(a.id), 'a is not evicted');
  t.ok(g.members.includes(b.id) || g.pending.includes(b.id), 'b is not evicted');
  t.ok(g.epoch < 1000, `the epoch stays plausible (${g.epoch})`);
  self.c.close(); // the forger has no data plane: it goes, the others re-form

  const x = new Float32Array([1, 2]);
  const y = new Float32Array([3, 4]);
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const [ra, rb] = await Promise.all([a.allReduce(x, { timeoutMs: 5000 }), b.allReduce(y, { timeoutMs: 5000 })]);
      t.equal(ra.worldSize, 2);
      t.equal(rb.worldSize, 2);
      break;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      x.set([1, 2]);
      y.set([3, 4]);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  t.same(Array.from(x), [4, 6], 'the run goes on with a and b');
});
