// The static ring of real peer processes over real sockets: correctness for every dtype and op, odd sizes,
// concurrency, and every way an operation can fail (killed peer, abort, timeout, mismatch, garbage, stranger).
import t, { Test } from 'tap';
import * as net from 'node:net';
import { allReduceOn, startPeer, startRing, stopAll, PeerHandle } from '../helpers/ring';
import { makeInput, referenceReduce, toNumbers } from '../helpers/data';
import type { DType, ReduceOp } from '../../lib/dtype';

const ALL_DTYPES: DType[] = ['float32', 'float64', 'float16', 'bfloat16', 'int8', 'uint8', 'int16', 'uint16', 'int32', 'uint32', 'int64', 'uint64'];
const ALL_OPS: ReduceOp[] = ['sum', 'avg', 'prod', 'min', 'max'];

function closeEnough(dtype: DType, got: number, want: number): boolean {
  if (Number.isNaN(want)) return Number.isNaN(got);
  const tol = dtype === 'float16' ? 1e-2 : dtype === 'bfloat16' ? 2e-2 : dtype === 'float32' ? 1e-5 : dtype === 'float64' ? 1e-12 : 0;
  return Math.abs(got - want) <= tol * Math.max(1, Math.abs(want));
}

/** Checks that every peer got identical bytes and that they match the JS reference. */
function checkResults(tt: Test, results: any[], dtype: DType, op: ReduceOp, count: number, seed: number, label: string) {
  const n = results.length;
  for (const r of results) tt.ok(r.ok, `${label}: peer succeeded ${r.ok ? '' : r.message}`);
  tt.equal(new Set(results.map((r) => r.hash)).size, 1, `${label}: all ${n} peers hold the same bytes`);
  if (results[0].data) {
    const inputs = Array.from({ length: n }, (_, rank) => makeInput(dtype, count, rank, seed));
    const want = referenceReduce(dtype, op, inputs);
    const got = toNumbers(dtype, ((dtype === 'int64' ? BigInt64Array : dtype === 'uint64' ? BigUint64Array : Float64Array) as any).from(
      results[0].data.map((s: string) => (dtype === 'int64' || dtype === 'uint64' ? BigInt(s) : Number(s))) as any,
    ) as any);
    const bad = got.findIndex((g, j) => !closeEnough(dtype, g, want[j]));
    tt.equal(bad, -1, `${label}: matches the reference${bad >= 0 ? ` (first difference at ${bad}: ${got[bad]} vs ${want[bad]})` : ''}`);
  }
}

t.test('rings of 1 to 5 processes, counts 0, 1, below the peer count, not divisible, multi-segment', async (t) => {
  for (const n of [1, 2, 3, 5]) {
    const peers = await startRing(n);
    t.teardown(() => stopAll(peers));
    for (const count of [0, 1, Math.max(0, n - 1), 1001, 200_003]) {
      const results = await allReduceOn(peers, [{ dtype: 'float32', op: 'sum', count, seed: count, returnData: count < 5000 }]);
      checkResults(t, results.map((r) => r[0]), 'float32', 'sum', count, count, `n=${n} count=${count}`);
      t.equal(results[0][0].worldSize, n, `n=${n} count=${count}: world size reported`);
    }
    await stopAll(peers);
  }
});

t.test('every dtype x op on 3 peers matches the JS reference, ring and direct, in place and out of place', async (t) => {
  const peers = await startRing(3);
  t.teardown(() => stopAll(peers));
  const ops = [];
  let tag = 0;
  for (const algorithm of ['ring', 'direct'] as const) {
    for (const dtype of ALL_DTYPES) {
      for (const op of ALL_OPS) ops.push({ dtype, op, count: 37, seed: tag, tag: tag++, returnData: true, outOfPlace: tag % 2 === 0, algorithm });
    }
  }
  // All 120 operations are in flight at once, each under its own tag.
  const results = await allReduceOn(peers, ops);
  ops.forEach((o, i) => {
    const label = `${o.algorithm} ${o.dtype} ${o.op}`;
    checkResults(t, results.map((r) => r[i]), o.dtype as DType, o.op as ReduceOp, 37, o.seed, label);
    if (o.outOfPlace) t.ok(results.every((r) => r[i].inputIntact), `${label}: out-of-place leaves the input alone`);
  });
});

t.test('peers that choose different algorithms for the same tag get a MismatchError', async (t) => {
  const peers = await startRing(2);
  t.teardown(() => stopAll(peers));
  const results = await allReduceOn(peers, (p) => [{ dtype: 'float32', op: 'sum', count: 100, algorithm: p.rank === 0 ? 'ring' : 'direct', timeoutMs: 10000 }]);
  for (const r of results) {
    t.equal(r[0].code, 'MISMATCH', r[0].message);
    t.equal(r[0].inputIntact, true, 'input intact');
  }
});

t.test('concurrent tagged operations started in different orders on each peer', async (t) => {
  const peers = await startRing(4);
  t.teardown(() => stopAll(peers));
  const base = Array.from({ length: 8 }, (_, i) => ({ dtype: 'float32', op: 'sum', count: 50_000 + i * 999, seed: 100 + i, tag: 1000 + i }));
  const results = await allReduceOn(peers, (p) => {
    const ops = base.map((o) => ({ ...o, delayMs: ((p.rank * 7 + o.tag) % 5) * 3 }));
    return p.rank % 2 ? ops.reverse() : ops;
  });
  for (const o of base) {
    const per = peers.map((p, k) => results[k][p.rank % 2 ? base.length - 1 - base.indexOf(o) : base.indexOf(o)]);
    t.ok(per.every((r) => r.ok), `tag ${o.tag} succeeded everywhere`);
    t.equal(new Set(per.map((r) => r.hash)).size, 1, `tag ${o.tag}: identical bytes on every peer`);
  }
  // The same tag used again, one after the other, is a new operation.
  for (let i = 0; i < 3; i++) {
    const again = await allReduceOn(peers, [{ dtype: 'int32', op: 'sum', count: 10, seed: i, tag: 5, returnData: true }]);
    checkResults(t, again.map((r) => r[0]), 'int32', 'sum', 10, i, `tag 5 reuse #${i}`);
  }
});

t.test('a peer killed mid-operation: survivors reject with PeerLostError and keep their input', async (t) => {
  const peers = await startRing(3);
  t.teardown(() => stopAll(peers));
  // Peer 2 never joins this operation and is killed while the others wait for it.
  const pending = Promise.all(peers.slice(0, 2).map((p) => p.request({ cmd: 'allreduce', ops: [{ dtype: 'float32', op: 'sum', count: 4_000_000, seed: 1 }] })));
  await new Promise((r) => setTimeout(r, 300));
  peers[2].kill('SIGKILL');
  const replies = await pending;
  for (const reply of replies) {
    const r = reply.results[0];
    t.equal(r.ok, false, 'the operation failed');
    t.equal(r.code, 'PEER_LOST', `PeerLostError (${r.message})`);
    t.equal(r.inputIntact, true, 'the buffer holds exactly its input');
  }
  t.ok(replies.some((reply) => /rank2/.test(reply.results[0].message)), 'the error names the lost peer');
  // Later operations on the broken group fail at once with the same error.
  const after = await allReduceOn(peers.slice(0, 2), [{ dtype: 'float32', op: 'sum', count: 10 }]);
  t.ok(after.every((r) => r[0].code === 'PEER_LOST'), 'the broken group refuses new operations');
});

t.test('a peer killed while its data is on the wire', async (t) => {
  const peers = await startRing(3);
  t.teardown(() => stopAll(peers));
  const pending = Promise.all(peers.map((p) => p.request({ cmd: 'allreduce', ops: [{ dtype: 'float64', op: 'sum', count: 24_000_000, seed: 2 }] })));
  await new Promise((r) => setTimeout(r, 250));
  peers[1].kill('SIGKILL');
  const replies = await pending;
  for (const k of [0, 2]) {
    const r = replies[k].results[0];
    if (r.ok) {
      t.pass(`peer ${k} had already finished before the kill`);
      continue;
    }
    t.equal(r.code, 'PEER_LOST', `peer ${k}: PeerLostError (${r.message})`);
    t.equal(r.inputIntact, true, `peer ${k}: buffer restored to its input`);
  }
});

t.test('abort through an AbortSignal rejects here and on the other peers, buffers intact', async (t) => {
  const peers = await startRing(3);
  t.teardown(() => stopAll(peers));
  const results = await allReduceOn(peers, (p) => [
    p.rank === 0
      ? { dtype: 'float32', op: 'sum', count: 1000, abortAfterMs: 50 }
      : { dtype: 'float32', op: 'sum', count: 1000, delayMs: 2000 },
  ]);
  t.equal(results[0][0].code, 'ABORTED', 'the aborting peer gets AbortError');
  for (const r of results) t.equal(r[0].inputIntact, true, 'input intact');
  for (const r of results.slice(1)) t.equal(r[0].code, 'ABORTED', `the others learn of the abort: ${r[0].message}`);
});

t.test('no progress within timeoutMs rejects with TimeoutError', async (t) => {
  const peers = await startRing(2);
  t.teardown(() => stopAll(peers));
  const r = await peers[0].request({ cmd: 'allreduce', ops: [{ dtype: 'float32', op: 'sum', count: 100, timeoutMs: 300 }] });
  t.equal(r.results[0].code, 'TIMEOUT', r.results[0].message);
  t.equal(r.results[0].inputIntact, true, 'input intact');
});

t.test('peers that disagree on the count or dtype all get a MismatchError', async (t) => {
  const peers = await startRing(3);
  t.teardown(() => stopAll(peers));
  const results = await allReduceOn(peers, (p) => [{ dtype: 'float32', op: 'sum', count: p.rank === 1 ? 1001 : 1000, timeoutMs: 10000 }]);
  for (const r of results) {
    t.equal(r[0].code, 'MISMATCH', `every peer is told: ${r[0].message}`);
    t.equal(r[0].inputIntact, true, 'input intact');
  }
  t.ok(results.some((r) => /1001/.test(r[0].message) && /1000/.test(r[0].message)), 'the message names both counts');
  const dt = await allReduceOn(peers, (p) => [{ dtype: p.rank === 2 ? 'int32' : 'float32', op: 'sum', count: 64, tag: 9, timeoutMs: 10000 }]);
  for (const r of dt) t.equal(r[0].code, 'MISMATCH', `dtype mismatch reported: ${r[0].message}`);
  // The group still works after a mismatch.
  const ok = await allReduceOn(peers, [{ dtype: 'float32', op: 'max', count: 64, tag: 10, returnData: true, seed: 3 }]);
  checkResults(t, ok.map((r) => r[0]), 'float32', 'max', 64, 3, 'after mismatch');
});

t.test('garbage, a silent stranger and a wrong token on a peer port do not disturb the ring', async (t) => {
  const peers = await startRing(2, { token: 'right-token' });
  t.teardown(() => stopAll(peers));
  const garbage = net.connect(peers[0].port, '127.0.0.1');
  await new Promise<void>((r) => garbage.on('connect', () => r()));
  garbage.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n' + 'x'.repeat(5000)));
  const silent = net.connect(peers[1].port, '127.0.0.1');
  const closed = new Promise<void>((r) => garbage.on('close', () => r()));
  garbage.on('error', () => {});
  silent.on('error', () => {});
  await closed;
  t.pass('the peer closed the garbage connection');
  const ok = await allReduceOn(peers, [{ dtype: 'int64', op: 'sum', count: 500, returnData: true, seed: 4 }]);
  checkResults(t, ok.map((r) => r[0]), 'int64', 'sum', 500, 4, 'after garbage');
  silent.destroy();

  // A third process that knows the addresses but not the token cannot join the ring.

  const stranger = await startPeer(0);
  t.teardown(() => stopAll([stranger]));
  await stranger.request({ cmd: 'configure', rank: 0, peers: [`127.0.0.1:${stranger.port}`, `127.0.0.1:${peers[1].port}`], token: 'wrong' });
  const r = await stranger.request({ cmd: 'allreduce', ops: [{ dtype: 'float32', op: 'sum', count: 10, timeoutMs: 5000 }] });
  t.equal(r.results[0].ok, false, 'the stranger is refused');
  t.equal(r.results[0].code, 'AUTH', r.results[0].message);
  const still = await allReduceOn(peers, [{ dtype: 'float32', op: 'sum', count: 10, tag: 2 }]);
  t.ok(still.every((x) => x[0].ok), 'the real ring still works');
});

export type { PeerHandle };
