// The peer's parts (membership.ts, collectives.ts) with a stand-in data plane and the master's messages played by
// the test: readiness, a ring that ends the operations of older epochs, an abort that ends a running operation at
// once, and allReduceMany retrying after a re-form. Nothing waits for a deadline here.
import t from 'tap';
import type { AllReduceOptions, AllReduceResult, DataPlane } from '../../lib/collective';
import type { TensorArray } from '../../lib/dtype';
import { AbortError, MismatchError, PeerLostError } from '../../lib/errors';
import { Logger } from '../../lib/log';
import { MasterMsg, PeerMsg, emptyPeerStats } from '../../lib/protocol';
import { Collectives } from '../../lib/peer/collectives';
import { Membership } from '../../lib/peer/membership';

/** A data plane whose all-reduces finish when the test says, and fail like the native one on configure/abort. */
class StandInPlane implements DataPlane {
  collective(): Promise<never> {
    return Promise.reject(new Error('not used here'));
  }
  readonly port = 1;
  epoch = 0;
  readonly aborted: number[] = [];
  private readonly running = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();

  configure(epoch: number): void {
    this.epoch = epoch;
    for (const [tag, r] of this.running) {
      this.running.delete(tag);
      r.reject(new PeerLostError(`group re-formed (epoch ${epoch})`));
    }
  }

  allReduce<T extends TensorArray>(data: T, options: AllReduceOptions<T> = {}): Promise<AllReduceResult<T>> {
    const out = options.output ?? data;
    return new Promise((resolve, reject) => {
      this.running.set(options.tag ?? 0, {
        resolve: () => {
          (out as Float32Array).set(data as Float32Array);
          (out as Float32Array)[0] += 100;
          resolve({ data: out, worldSize: 2, bytesSent: 4, bytesReceived: 4 });
        },
        reject,
      });
    });
  }

  /** Completes the all-reduce of `tag` on this peer. */
  finish(tag: number): void {
    const r = this.running.get(tag);
    if (!r) throw new Error(`no all-reduce with tag ${tag} is running`);
    this.running.delete(tag);
    r.resolve();
  }

  isRunning(tag: number): boolean {
    return this.running.has(tag);
  }

  exchange(): Promise<never> {
    return Promise.reject(new Error('not used'));
  }

  abort(tag: number, message: string): void {
    this.aborted.push(tag);
    const r = this.running.get(tag);
    this.running.delete(tag);
    r?.reject(new AbortError(message));
  }

  async close(): Promise<void> {}
}

function setup() {
  const plane = new StandInPlane();
  const sent: PeerMsg[] = [];
  const log = new Logger('test', 'silent');
  const ctx = { peerGroup: 0, dataPlane: plane, log: () => log, send: (m: PeerMsg) => sent.push(m), stats: emptyPeerStats(), failure: () => undefined };
  const membership = new Membership({
    ...ctx, reconnecting: () => false, masterAddress: () => 'master:1', controlBehind: () => false, controlCaughtUp: async () => undefined,
  });
  const collectives = new Collectives({ ...ctx, membership, reformWaitMs: () => 5000 });
  const master = (m: MasterMsg) => {
    if (m.t === 'opCommit' || m.t === 'opAbort') collectives.ops.onMessage(m);
    else if (m.t === 'ring' || m.t === 'ready' || m.t === 'world' || m.t === 'voteResult') membership.onMessage(m);
  };
  const ring = (epoch: number) => master({ t: 'ring', epoch, index: 0, peers: [{ id: 'p1@h:1', host: 'h', port: 1 }, { id: 'p2@h:2', host: 'h', port: 2 }], ticket: new Uint8Array(16), reason: `test epoch ${epoch}` });
  const ready = (epoch: number) => {
    master({ t: 'ready', epoch });
    master({ t: 'world', worldSize: 2, groupWorldSize: 2, peerGroups: 1, pending: 0 });
  };
  const tick = () => new Promise((r) => setImmediate(r));
  return { plane, sent, membership, collectives, master, ring, ready, tick };
}

t.test('an operation waits until its epoch is ready, then commits through the master; the input changes only then', async (t) => {
  const { plane, sent, collectives, master, ring, ready, tick } = setup();
  ring(1);
  t.same(sent, [{ t: 'ack', epoch: 1 }], 'the ring is installed and acknowledged at once');
  t.equal(plane.epoch, 1);
  const data = new Float32Array([1, 2]);
  const op = collectives.allReduce(data, { tag: 5 });
  await tick();
  t.notOk(plane.isRunning(5), 'nothing starts before ready');
  ready(1);
  await tick();
  t.ok(plane.isRunning(5), 'it starts once the epoch is ready');
  plane.finish(5);
  await tick();
  t.same(sent.at(-1), { t: 'done', epoch: 1, key: '5.0' });
  t.same(Array.from(data), [1, 2], 'the caller\'s array is untouched before the commit');
  master({ t: 'opCommit', epoch: 1, key: '5.0' });
  const r = await op;
  t.same(Array.from(data), [101, 2], 'the result lands at the commit');
  t.equal(r.epoch, 1);
});

t.test('a newer ring ends the operations of the old epoch at once: running ones and those waiting for their commit', async (t) => {
  const { plane, sent, collectives, ring, ready, tick } = setup();
  ring(1);
  ready(1);
  const running = collectives.allReduce(new Float32Array(2), { tag: 1 });
  const committing = collectives.allReduce(new Float32Array(2), { tag: 2 });
  await tick();
  plane.finish(2);
  await tick();
  ring(2); // a peer was lost
  const e1 = await running.catch((e: Error) => e);
  const e2 = await committing.catch((e: Error) => e);
  t.type(e1, PeerLostError);
  t.type(e2, PeerLostError);
  t.ok((e2 as PeerLostError).retryable, 'retryable');
  t.match((e2 as Error).message, /re-formed \(epoch 1 -> 2: test epoch 2\); retry/);
  t.notOk(sent.some((m) => m.t === 'fail' || m.t === 'lost'), 'nothing to report: the master re-formed the group itself');
});

t.test('an abort from the master ends the data-plane part at once, with the error the master named', async (t) => {
  const { plane, sent, collectives, master, ring, ready, tick } = setup();
  ring(1);
  ready(1);
  const data = new Float32Array([7, 7]);
  const op = collectives.allReduce(data, { tag: 3, timeoutMs: 30_000 });
  await tick();
  const t0 = Date.now();
  master({ t: 'opAbort', epoch: 1, key: '3.0', code: 'MISMATCH', message: 'counts differ (on p2)' });
  const err = await op.catch((e: Error) => e);
  t.ok(Date.now() - t0 < 1000, 'it did not wait for its 30 s deadline');
  t.same(plane.aborted, [3], 'the data plane was told to abort the operation');
  t.type(err, MismatchError, 'the class of the code the master sent');
  t.match((err as Error).message, /counts differ \(on p2\)/);
  t.notOk(sent.some((m) => m.t === 'fail'), 'no second report of a failure the master announced');
  t.same(Array.from(data), [7, 7], 'the input is intact');
});

t.test('allReduceMany retries after the group re-forms', async (t) => {
  const { plane, sent, collectives, master, ring, ready, tick } = setup();
  ring(1);
  ready(1);
  const data = new Float32Array([1, 1]);
  const many = collectives.allReduceMany([data], { tagBase: 9 }, (d, o) => collectives.allReduce(d, o));
  await tick();
  ring(2); // the first attempt fails with the re-form
  await tick();
  t.notOk(plane.isRunning(9), 'the retry waits for the new epoch to be ready');
  ready(2);
  await tick();
  await tick();
  t.ok(plane.isRunning(9), 'and then runs again');
  plane.finish(9);
  await tick();
  master({ t: 'opCommit', epoch: 2, key: '9.0' });
  const [r] = await many;
  t.equal(r.epoch, 2, 'the result is from the new epoch');
  t.same(Array.from(data), [101, 1]);
  t.same(sent.filter((m) => m.t === 'done'), [{ t: 'done', epoch: 2, key: '9.0' }], 'only the retry reached the commit');
});
