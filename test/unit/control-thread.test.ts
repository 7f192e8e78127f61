// The control thread's "behind" state (lib/peer/control-thread.ts) and what waits on it (Membership.waitReady):
// a failed worker's late messages never unbalance the next worker's counts, and an operation waiting for this
// thread to catch up still ends at its deadline or abort.
import t from 'tap';
import * as net from 'node:net';
import type { Worker } from 'node:worker_threads';
import { ControlThread } from '../../lib/peer/control-thread';
import { Membership } from '../../lib/peer/membership';
import { Logger } from '../../lib/log';
import { AbortError, TimeoutError } from '../../lib/errors';
import { emptyPeerStats } from '../../lib/protocol';
import { monotonicMs } from '../../lib/clock';
import type { DataPlane } from '../../lib/collective';

t.test('a failed worker\'s late messages do not leave the next worker behind for good', async (t) => {
  const server = net.createServer((s) => s.on('error', () => undefined));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const port = (server.address() as net.AddressInfo).port;
  const thread = new ControlThread();
  const first = thread.connect('127.0.0.1', port);
  const closed = new Promise<Error | undefined>((r) => first.once('close', r));
  const w1 = (thread as unknown as { worker: Worker }).worker;
  w1.emit('error', new Error('test failure')); // the worker failed...
  t.match((await closed)?.message, /worker thread failed: test failure/);
  const second = thread.connect('127.0.0.1', port); // ...and a new one starts for the next connection
  second.on('close', () => undefined);
  w1.emit('message', { t: 'msg', id: first.id, msg: { t: 'ready', epoch: 1 } }); // the failed worker's queued message
  t.equal(thread.behind(), false, 'not behind: the stale message is not counted for the new worker');
  await thread.caughtUp();
  await w1.terminate();
  await thread.shutdown();
});

function membership(caughtUp: (signal?: AbortSignal) => Promise<void>) {
  const log = new Logger('test', 'silent');
  const plane = { port: 1, configure: () => undefined } as unknown as DataPlane;
  const ctx = { peerGroup: 0, dataPlane: plane, log: () => log, send: () => undefined, stats: emptyPeerStats(), failure: () => undefined };
  return new Membership({ ...ctx, reconnecting: () => false, masterAddress: () => 'master:1', controlBehind: () => true, controlCaughtUp: caughtUp });
}

t.test('waiting for the control thread to catch up ends at the deadline and on abort', async (t) => {
  const withdrawn: AbortSignal[] = [];
  const m = membership((signal) => {
    if (signal) withdrawn.push(signal);
    return new Promise(() => undefined); // never catches up
  });
  await t.rejects(m.waitReady(1, monotonicMs() + 50, 'waiting for the group'), TimeoutError, 'the deadline holds');
  const ac = new AbortController();
  const p = m.waitReady(1, Infinity, 'waiting for the group', ac.signal);
  ac.abort(new Error('user'));
  await t.rejects(p, AbortError, 'the abort signal holds');
  t.equal(withdrawn.length, 2);
  t.ok(withdrawn.every((s) => s.aborted), 'each wait was withdrawn from the control thread');
});
