// DiLoCo, async DiLoCo and Streaming DiLoCo over the real master and Communicators (loopback, one process).
import t, { Test } from 'tap';
import { DiLoCo, StreamingDiLoCo } from '../../lib/diloco/index';
import { inProcessGroup, waitFor } from '../helpers/communicator';

function drift(p: Float32Array, peer: number, step: number) {
  for (let i = 0; i < p.length; i++) p[i] += 0.01 * (peer + 1) * Math.sin(i * 0.1 + step);
}

t.test('DiLoCo over real communicators: bit-identical, revision +1 per outer step, a newcomer catches up', async (t) => {
  const { comms, connect } = await inProcessGroup(t, 3);
  const params = comms.map(() => new Float32Array(5000).fill(0.5));
  const opts = comms.map((c, i) => new DiLoCo(c, { params: params[i], innerSteps: 4 }));
  await Promise.all(opts.map((o) => o.join()));
  const run = async (list: [DiLoCo<unknown>, Float32Array][], from: number, to: number) => {
    for (let s = from; s <= to; s++) {
      list.forEach(([, p], i) => drift(p, i, s));
      await Promise.all(list.map(([o]) => o.step()));
    }
  };
  const pairs: [DiLoCo<unknown>, Float32Array][] = opts.map((o, i) => [o, params[i]]);
  await run(pairs, 1, 8);
  t.equal(opts[0].outerStep, 2);
  t.equal((opts[0].state as { revision: number }).revision, 2);
  t.same(Buffer.from(params[1].buffer), Buffer.from(params[0].buffer));
  t.same(Buffer.from(params[2].buffer), Buffer.from(params[0].buffer));
  t.ok(opts[0].stats.bytesSent > 0);
  // a newcomer: connect() resolves once the members vote it in at their next outer step
  const pn = new Float32Array(5000).fill(9);
  const joining = connect().then(async (c) => {
    const d = new DiLoCo(c, { params: pn, innerSteps: 4 });
    await d.join({ strategy: 'receiveOnly' });
    return d;
  });
  // The members must see it waiting before their next vote (connecting starts the control thread first).
  await waitFor(() => comms[0].arePeersPending(), 30_000, 'the newcomer pending');
  await run(pairs, 9, 12);
  const dn = await joining;
  t.same(Buffer.from(pn.buffer), Buffer.from(params[0].buffer), 'newcomer received the outer params');
  t.equal(dn.innerStep, 12);
  await run([...pairs, [dn, pn]], 13, 16);
  t.equal(opts[0].stats.allReduces, 4);
  t.same(Buffer.from(pn.buffer), Buffer.from(params[0].buffer));
});

t.test('async DiLoCo and Streaming DiLoCo over real communicators', async (t) => {
  const { comms } = await inProcessGroup(t, 2);
  const params = comms.map(() => new Float32Array(4096).fill(0.1));
  const opts = comms.map((c, i) => new DiLoCo(c, { params: params[i], innerSteps: 3, async: true }));
  await Promise.all(opts.map((o) => o.join()));
  for (let s = 1; s <= 9; s++) {
    params.forEach((p, i) => drift(p, i, s));
    await Promise.all(opts.map((o) => o.step()));
  }
  await Promise.all(opts.map((o) => o.finish()));
  t.same(Buffer.from(params[1].buffer), Buffer.from(params[0].buffer));
  t.same(Buffer.from(opts[1].outerParams.buffer), Buffer.from(opts[0].outerParams.buffer));

  const tensors = comms.map(() => Array.from({ length: 8 }, () => new Float32Array(512).fill(1)));
  const sds = comms.map((c, i) => new StreamingDiLoCo(c, { params: tensors[i], fragments: 4, innerSteps: 8, overlapSteps: 1, tagBase: 5000 }));
  await Promise.all(sds.map((s) => s.join()));
  for (let s = 1; s <= 16; s++) {
    tensors.forEach((ts, i) => ts.forEach((x, j) => drift(x, i, s + j)));
    await Promise.all(sds.map((sd) => sd.step()));
  }
  await Promise.all(sds.map((s) => s.finish()));
  for (let p = 0; p < 4; p++) t.same(Buffer.from(sds[1].outerParams(p).buffer), Buffer.from(sds[0].outerParams(p).buffer));
  t.equal(sds[0].stats.peakBytesPerSync > 0, true);
  t.ok(sds[0].stats.peakBytesPerSync < 2 * 1024 * 4 * 1.5, 'one fragment per sync');
});
