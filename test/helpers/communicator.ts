// Communicator peer processes (test/fixtures/communicator-peer.ts) and the values they contribute.
import { PeerProcess } from '../harness/process';
import type { CommunicatorOptions } from '../../lib/peer/communicator';
import { Master } from '../../lib/master/master';
import { Communicator } from '../../lib/peer/communicator';

/** Starts a communicator peer with these options (+ `value`, its contribution); await `.ready`. */
export function startPeer(options: Partial<CommunicatorOptions> & { master: string; value?: number }): PeerProcess {
  return new PeerProcess('test/fixtures/communicator-peer.ts', { argv: [JSON.stringify(options)] });
}

/** The vector a peer contributes at a step: element i = value * 1000 + (i % 7) + step (exact in float32). */
export function contribution(value: number, step: number, n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = value * 1000 + (i % 7) + step;
  return a;
}

/** Expected first elements after a sum over contributors with these `value`s at `step`. */
export function expectedFirst(values: number[], step: number, count = 8): number[] {
  return Array.from({ length: count }, (_, i) => values.reduce((s, v) => s + v * 1000 + (i % 7) + step, 0));
}

export { PeerEvent, PeerProcess, waitFor } from '../harness/process';

/**
 * A master and `n` Communicators in this process (loopback, 2 connections per link), voted into one group; closed
 * at the test's teardown. `connect` adds another (it waits to be voted in by the members' next updateTopology).
 */
export async function inProcessGroup(t: { teardown(fn: () => Promise<void>): void }, n: number, deadlineMs = 30_000) {
  const master = new Master({ host: '127.0.0.1', port: 0, logLevel: 'silent' });
  const port = await master.listen();
  const comms: Communicator[] = [];
  t.teardown(async () => {
    await Promise.all(comms.map((c) => c.close()));
    await master.close();
  });
  const connect = () => Communicator.connect({ master: `127.0.0.1:${port}`, connections: 2, logLevel: 'silent' }).then((c) => (comms.push(c), c));
  const first = await connect();
  const rest = Array.from({ length: n - 1 }, () => connect());
  // Every member votes until all are in (the ones admitted late vote too).
  const deadline = Date.now() + deadlineMs;
  while (first.groupWorldSize < n) {
    if (Date.now() > deadline) throw new Error(`only ${first.groupWorldSize} of ${n} communicators joined within ${deadlineMs} ms`);
    await Promise.all(comms.map((c) => c.updateTopology()));
    await new Promise((r) => setTimeout(r, 20));
  }
  return { comms: [first, ...(await Promise.all(rest))], connect };
}
