// The optimizers' logic on simulated peers in one process (exact averaging): outer-step rules, async delay,
// streaming schedule, newcomers, lost peers. Training across processes uses the real Communicator
// (test/integration/diloco*.test.ts).
import t from 'tap';
import { DiLoCo, StreamingDiLoCo } from '../../lib/diloco/index';
import { InProcessGroup, InProcessMember } from '../helpers/diloco-in-process';

/** A fake inner step: deterministic drift depending on the peer and the step. */
function drift(p: Float32Array, peer: number, step: number) {
  for (let i = 0; i < p.length; i++) p[i] += 0.01 * (peer + 1) * Math.sin(i + step);
}

t.test('DiLoCo with SGD lr 1 is model averaging; all peers bit-identical; revision +1 per outer step', async (t) => {
  const { members } = InProcessGroup.create(3);
  const params = members.map(() => new Float32Array([1, 2, 3, 4]));
  const opts = members.map((m, i) => new DiLoCo(m, { params: params[i], innerSteps: 5, outer: { type: 'sgd', lr: 1 } }));
  await Promise.all(opts.map((o) => o.join()));
  for (let s = 1; s <= 10; s++) {
    params.forEach((p, i) => drift(p, i, s));
    const expected = s % 5 === 0 ? Float32Array.from(params[0], (_, k) => (params[0][k] + params[1][k] + params[2][k]) / 3) : undefined;
    const reports = await Promise.all(opts.map((o) => o.step()));
    if (expected) {
      t.equal(reports[0]!.worldSize, 3);
      t.equal(reports[0]!.revision, s / 5);
      for (const p of params) for (let k = 0; k < 4; k++) t.ok(Math.abs(p[k] - expected[k]) < 1e-6);
      t.same([...params[1]], [...params[0]]);
      t.same([...params[2]], [...params[0]]);
    } else t.equal(reports[0], undefined);
  }
  t.equal(opts[0].outerStep, 2);
  t.ok(opts[0].stats.bytesSent > 0);
});

t.test('DiLoCo Nesterov: outer params follow the reference rule on the average pseudo-gradient', async (t) => {
  const { members } = InProcessGroup.create(2);
  const params = members.map(() => new Float32Array([0.5, -0.5]));
  const opts = members.map((m, i) => new DiLoCo(m, { params: params[i], innerSteps: 2 }));
  await Promise.all(opts.map((o) => o.join()));
  const outer = new Float64Array([0.5, -0.5]);
  const mom = new Float64Array(2);
  for (let s = 1; s <= 6; s++) {
    params.forEach((p, i) => drift(p, i, s));
    if (s % 2 === 0) {
      for (let k = 0; k < 2; k++) {
        const g = outer[k] - (params[0][k] + params[1][k]) / 2;
        mom[k] = 0.9 * mom[k] + g;
        outer[k] -= 0.7 * (g + 0.9 * mom[k]);
      }
    }
    await Promise.all(opts.map((o) => o.step()));
  }
  for (let k = 0; k < 2; k++) t.ok(Math.abs(params[0][k] - outer[k]) < 1e-5, `param ${k}: ${params[0][k]} vs ${outer[k]}`);
  t.same([...opts[0].outerParams], [...opts[1].outerParams]);
});

t.test('async DiLoCo applies each average one outer step late', async (t) => {
  const { members } = InProcessGroup.create(2);
  const params = members.map(() => new Float32Array([0, 0]));
  const opts = members.map((m, i) => new DiLoCo(m, { params: params[i], innerSteps: 1, outer: { type: 'sgd', lr: 1 }, async: true }));
  await Promise.all(opts.map((o) => o.join()));
  // round 1: peer i moves +1*(i+1) -> avg pseudo-grad -1.5, applied at the end of round 2
  const move = async (k: number) => {
    params.forEach((p, i) => p.fill(p[0] + k * (i + 1)));
    await Promise.all(opts.map((o) => o.step()));
  };
  await move(1);
  t.same([...params[0]], [1, 1], 'after round 1 nothing landed: each peer keeps its own progress');
  t.same([...params[1]], [2, 2]);
  t.same([...opts[0].outerParams], [0, 0]);
  await move(2);
  t.same([...opts[0].outerParams], [1.5, 1.5], 'after round 2 the round-1 average landed');
  t.same([...params[0]], [3.5, 3.5], 'outer + own round-2 progress');
  t.same([...params[1]], [5.5, 5.5]);
  await Promise.all(opts.map((o) => o.finish()));
  t.same([...params[0]], [4.5, 4.5], 'finish() applies the round-2 average');
  t.same([...params[1]], [...params[0]]);
});

for (const sharedState of [true, false]) t.test(`DiLoCo: a newcomer receives the outer state and momentum, then all peers stay identical (${sharedState ? 'syncSharedState' : 'all-reduce fallback'})`, async (t) => {
  const group = new InProcessGroup({ sharedState });
  const a = group.join(true);
  const b = group.join(true);
  const pa = new Float32Array(6).fill(1);
  const pb = new Float32Array(6).fill(1);
  const da = new DiLoCo(a, { params: pa, innerSteps: 3 });
  const db = new DiLoCo(b, { params: pb, innerSteps: 3 });
  await Promise.all([da.join(), db.join()]);
  const run = async (list: [DiLoCo, Float32Array][], from: number, to: number) => {
    for (let s = from; s <= to; s++) {
      list.forEach(([, p], i) => drift(p, i, s));
      await Promise.all(list.map(([o]) => o.step()));
    }
  };
  await run([[da, pa], [db, pb]], 1, 5);
  // a newcomer with different local params asks to join; it is admitted at the next outer step
  const c = group.join(false);
  const pc = new Float32Array(6).fill(42);
  const dc = new DiLoCo(c, { params: pc, innerSteps: 3 });
  const joining = c.accepted.then(() => dc.join({ strategy: 'receiveOnly' }));
  await run([[da, pa], [db, pb]], 6, 6); // outer step 2: admits c and syncs it
  await joining;
  t.equal(c.worldSize, 3);
  t.same([...pc], [...pa], 'newcomer starts from the outer params');
  t.equal(dc.innerStep, 6);
  t.equal(dc.outerStep, 2);
  t.same([...(dc.state.entries['diloco.momentum'])], [...(da.state.entries['diloco.momentum'])], 'momentum received');
  t.equal(dc.state.revision, da.state.revision);
  await run([[da, pa], [db, pb], [dc, pc]], 7, 12);
  t.same([...pc], [...pa]);
  t.same([...pb], [...pa]);
  t.equal(da.state.revision, 4);
});

t.test('DiLoCo survives a peer lost during the all-reduce (retry with the survivors)', async (t) => {
  const { group, members } = InProcessGroup.create(3);
  const params = members.map(() => new Float32Array([1, 1, 1]));
  const opts = members.map((m, i) => new DiLoCo(m, { params: params[i], innerSteps: 2, outer: { type: 'sgd', lr: 1 } }));
  await Promise.all(opts.map((o) => o.join()));
  params.forEach((p, i) => drift(p, i, 1));
  await Promise.all(opts.map((o) => o.step()));
  params.forEach((p, i) => drift(p, i, 2));
  const expected = Float32Array.from(params[0], (_, k) => (params[0][k] + params[1][k]) / 2);
  // peers 0 and 1 enter the all-reduce; peer 2 dies before arriving
  const steps = [opts[0].step(), opts[1].step()];
  await new Promise((r) => setImmediate(r));
  group.kill(members[2] as InProcessMember);
  const reports = await Promise.all(steps);
  t.equal(reports[0]!.worldSize, 2);
  t.equal(opts[0].stats.retries, 1);
  for (let k = 0; k < 3; k++) t.ok(Math.abs(params[0][k] - expected[k]) < 1e-6);
  t.same([...params[1]], [...params[0]]);
});

t.test('StreamingDiLoCo: staggered fragments, tau overlap, alpha mixing, bytes per sync ~ 1/P', async (t) => {
  const { members } = InProcessGroup.create(2);
  const mk = () => [0, 1, 2, 3, 4, 5, 6, 7].map(() => new Float32Array(16));
  const tensors = members.map(mk);
  const sds = members.map((m, i) =>
    new StreamingDiLoCo(m, { params: tensors[i], fragments: 4, innerSteps: 8, overlapSteps: 1, alpha: 0, outer: { type: 'sgd', lr: 1 } }),
  );
  t.same(sds[0].fragmentTensors, [['t0', 't1'], ['t2', 't3'], ['t4', 't5'], ['t6', 't7']]);
  t.same(sds[0].offsets, [0, 2, 4, 6]);
  await Promise.all(sds.map((s) => s.join()));
  const launchedAt: Record<number, number[]> = {};
  const landedAt: Record<number, number[]> = {};
  for (let s = 1; s <= 16; s++) {
    tensors.forEach((ts, i) => ts.forEach((x, j) => drift(x, i, s + j)));
    const rs = await Promise.all(sds.map((sd) => sd.step()));
    if (rs[0]) {
      if (rs[0].launched.length) launchedAt[s] = rs[0].launched;
      if (rs[0].landed.length) landedAt[s] = rs[0].landed;
    }
  }
  t.same(launchedAt, { 2: [1], 4: [2], 6: [3], 8: [0], 10: [1], 12: [2], 14: [3], 16: [0] });
  t.same(landedAt, { 3: [1], 5: [2], 7: [3], 9: [0], 11: [1], 13: [2], 15: [3] });
  t.same([...sds[0].outerParams(3)], [...sds[1].outerParams(3)]);
  t.equal(sds[0].stats.peakBytesPerSync, 2 * 16 * 4, 'one fragment (a quarter of the model) per sync');
  await Promise.all(sds.map((s) => s.finish()));
  // with alpha = 0, a fragment that just landed equals the outer params on both peers
  t.same([...tensors[0][0]], [...tensors[1][0]]);
  t.same([...tensors[0][0]], [...sds[0].outerParams(0).subarray(0, 16)]);
});

t.test('step() lets timers and sockets run between inner steps (heartbeats, overlapped all-reduces)', async (t) => {
  const { members } = InProcessGroup.create(1);
  const a = new DiLoCo(members[0], { params: new Float32Array(4), innerSteps: 100 });
  const b = new StreamingDiLoCo(members[0], { params: { x: new Float32Array(4), y: new Float32Array(4) }, fragments: 2, innerSteps: 100 });
  await a.join();
  await b.join();
  for (const opt of [a, b]) {
    let ran = false;
    setImmediate(() => (ran = true));
    await opt.step(); // not a sync point: without a yield only microtasks would run
    t.equal(ran, true, `${opt.constructor.name}.step() yielded to the event loop`);
  }
});

t.test('DiLoCo weighting: pseudo-gradients are averaged by the tokens each worker processed', async (t) => {
  const { members } = InProcessGroup.create(3);
  const params = members.map(() => new Float32Array([1, 2, 3, 4]));
  const opts = members.map((m, i) => new DiLoCo(m, { params: params[i], innerSteps: 2, weighting: 'tokens', outer: { type: 'sgd', lr: 1 } }));
  await Promise.all(opts.map((o) => o.join()));
  await t.rejects(opts[0].step(), { code: 'INVALID_ARGUMENT', message: /step\(\{ tokens \}\)/ }, 'tokens are required');
  const tokens = [100, 300, 600];
  params.forEach((p, i) => p.fill(10 * (i + 1)));
  await Promise.all(opts.map((o, i) => o.step({ tokens: tokens[i] / 2 })));
  const reports = await Promise.all(opts.map((o, i) => o.step({ tokens: tokens[i] / 2 })));
  // SGD lr 1 is model averaging: outer = sum(tokens_i * local_i) / sum(tokens_i).
  const expected = Math.fround((100 * 10 + 300 * 20 + 600 * 30) / 1000);
  for (const p of params) t.same([...p], [expected, expected, expected, expected]);
  t.same(reports.map((r) => r!.weight), tokens);
  t.throws(() => new DiLoCo(members[0], { params: new Float32Array(4), weighting: 'tokens', quantization: { codec: 'uint8' } }), /cannot be quantized/);
});

t.test('DiLoCo innerSeconds: a slow worker ends its inner phase with fewer steps, weighted by its steps', async (t) => {
  const { members } = InProcessGroup.create(2);
  const params = members.map(() => new Float32Array([0, 0]));
  const opts = members.map((m, i) => new DiLoCo(m, { params: params[i], innerSteps: 1000, innerSeconds: 0.3, outer: { type: 'sgd', lr: 1 } }));
  t.equal(opts[0].weighting, 'steps', 'innerSeconds weights by steps by default');
  await Promise.all(opts.map((o) => o.join()));
  const run = async (i: number, ms: number) => {
    for (;;) {
      await new Promise((r) => setTimeout(r, ms));
      params[i][0] += 1; // every inner step moves the model by 1
      const r = await opts[i].step();
      if (r) return r;
    }
  };
  const [fast, slow] = await Promise.all([run(0, 10), run(1, 60)]);
  t.ok(fast.roundSteps > slow.roundSteps, `the fast worker did more inner steps (${fast.roundSteps} vs ${slow.roundSteps})`);
  t.ok(slow.roundSteps < 1000, 'the phase ended by time');
  const n = fast.roundSteps + slow.roundSteps;
  t.equal(params[0][0], Math.fround((fast.roundSteps * fast.roundSteps + slow.roundSteps * slow.roundSteps) / n), 'average weighted by inner steps');
});

t.test('StreamingDiLoCo innerSeconds: a slow worker moves through the schedule by the clock, in step with the fast one', async (t) => {
  const { members } = InProcessGroup.create(2);
  const params = members.map(() => Array.from({ length: 4 }, () => new Float32Array(8)));
  const opts = members.map((m, i) => new StreamingDiLoCo(m, { params: params[i], fragments: 4, innerSteps: 8, overlapSteps: 1, innerSeconds: 0.4, outer: { type: 'sgd', lr: 1 } }));
  t.equal(opts[0].weighting, 'steps');
  await Promise.all(opts.map((o) => o.join()));
  const launches: number[][] = [[], []];
  const steps = [0, 0];
  const run = async (i: number, ms: number) => {
    while (opts[i].innerStep < 24) { // three periods of 8 positions
      await new Promise((r) => setTimeout(r, ms));
      for (const p of params[i]) p[0] += 1;
      steps[i]++;
      const r = await opts[i].step();
      if (r) launches[i].push(...r.launched);
    }
    await opts[i].finish();
  };
  await Promise.all([run(0, 10), run(1, 120)]);
  t.ok(steps[1] < steps[0], `the slow worker did fewer inner steps (${steps[1]} vs ${steps[0]})`);
  t.same(launches[1], launches[0], 'both launched the same fragments in the same order');
  for (let p = 0; p < 4; p++) t.same([...opts[1].outerParams(p)], [...opts[0].outerParams(p)], `fragment ${p}: outer parameters bit-identical`);
});
