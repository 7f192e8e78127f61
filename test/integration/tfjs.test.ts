// tccl/tfjs over the real master and Communicators (loopback, one process, one tfjs engine shared by the peers):
// all-reduce of tensors and gradient maps, DiLoCo / async DiLoCo / Streaming DiLoCo driving tfjs models.
import t from 'tap';
import * as tf from '@tensorflow/tfjs';
import { allReduceGradients, allReduceTensors, TfjsDiLoCo, TfjsStreamingDiLoCo, type TfjsLayer } from '../../lib/tfjs/index';
import { inProcessGroup, waitFor } from '../helpers/communicator';

/** Every weight of a model as one byte string (bit-level comparison). */
function bytesOf(vars: tf.Variable[] | tf.Tensor[]): Buffer {
  return Buffer.concat(vars.map((v) => Buffer.from((v.dataSync() as Float32Array).slice().buffer)));
}

function mlp(seed: number): tf.Sequential {
  return tf.sequential({
    layers: [
      tf.layers.dense({ units: 16, inputShape: [8], activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed }) }),
      tf.layers.dense({ units: 4, kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 1 }) }),
    ],
  });
}

/** One inner step of Adam on a random regression batch that differs per peer and step. */
function innerStep(model: tf.Sequential, opt: tf.Optimizer, peer: number, step: number): void {
  tf.tidy(() => {
    const x = tf.randomNormal([16, 8], 0, 1, 'float32', 1000 * peer + step);
    const y = tf.randomNormal([16, 4], peer * 0.1, 1, 'float32', 7 + 1000 * peer + step);
    opt.minimize(() => tf.losses.meanSquaredError(y, model.predict(x) as tf.Tensor), false);
  });
}

t.before(async () => {
  await tf.setBackend('cpu');
});

t.test('allReduceGradients / allReduceTensors: every peer gets the same bytes, the right values, and no tensor leaks', async (t) => {
  const { comms } = await inProcessGroup(t, 3);
  const before = tf.memory().numTensors;
  const grads = comms.map((_, i) => ({
    'dense/kernel': tf.fill([5, 7], i + 1),
    'dense/bias': tf.tensor1d([i, -i, 0.5 * i]),
  }));
  const results = await Promise.all(comms.map((c, i) => allReduceGradients(c, grads[i], { disposeInputs: true })));
  for (const g of grads) t.ok(g['dense/kernel'].isDisposed, 'disposeInputs disposed the inputs');
  const avg = results.map((r) => r.tensors);
  t.same([...avg[0]['dense/kernel'].dataSync()], new Array(35).fill(2));
  t.same(avg[0]['dense/kernel'].shape, [5, 7]);
  t.same([...avg[0]['dense/bias'].dataSync()], [1, -1, 0.5]);
  for (const a of avg) t.same(bytesOf([a['dense/kernel'], a['dense/bias']]), bytesOf([avg[0]['dense/kernel'], avg[0]['dense/bias']]));
  t.equal(results[0].worldSize, 3);
  t.ok(results[0].bytesSent > 0);
  avg.forEach((a) => tf.dispose(a));
  t.equal(tf.memory().numTensors, before, 'no tensor left behind');

  // an array, op sum, quantized: bit-identical everywhere, close to the exact sum
  const xs = comms.map((_, i) => [tf.tidy(() => tf.linspace(-1, 1, 1000).mul(i + 1)), tf.scalar(i)]);
  const sums = await Promise.all(comms.map((c, i) => allReduceTensors(c, xs[i], { op: 'sum', quantization: { codec: 'uint8' }, tag: 3 })));
  for (const s of sums) t.same(bytesOf(s.tensors), bytesOf(sums[0].tensors));
  const maxErr = tf.tidy(() => tf.max(tf.abs(tf.sub(sums[0].tensors[0], tf.linspace(-1, 1, 1000).mul(6)))).dataSync()[0]);
  t.ok(maxErr < 0.05, `uint8 sum close to the exact sum (max error ${maxErr})`);
  t.equal(sums[0].tensors[1].shape.length, 0, 'a scalar stays a scalar');
  tf.dispose([...xs.flat(), ...sums.flatMap((s) => s.tensors)]);
  t.equal(tf.memory().numTensors, before);

  await t.rejects(allReduceTensors(comms[0], [tf.tensor1d([1, 2], 'int32')]), /dtype int32; only float32/);
  t.equal(tf.memory().numTensors, before + 1); // the int32 tensor above
});

t.test('TfjsDiLoCo on a tf.LayersModel: bit-identical weights, a newcomer receives them, no tensor leak', async (t) => {
  const { comms, connect } = await inProcessGroup(t, 3);
  const models = comms.map((_, i) => mlp(10 * (i + 1))); // different initial weights: join() settles them
  const opts = models.map(() => tf.train.adam(0.01));
  const dl = comms.map((c, i) => new TfjsDiLoCo(c, { model: models[i], innerSteps: 4 }));
  t.equal(dl[0].parameters.layers.length, 2);
  await Promise.all(dl.map((d) => d.join()));
  t.same(bytesOf(models[1].getWeights()), bytesOf(models[0].getWeights()), 'join: one set of weights');
  const run = async (list: number[], from: number, to: number) => {
    for (let s = from; s <= to; s++) {
      list.forEach((i) => innerStep(models[i], opts[i], i, s));
      await Promise.all(list.map((i) => dl[i].step()));
    }
  };
  await run([0, 1, 2], 1, 4);
  const afterFirst = tf.memory().numTensors; // Adam's slots exist now
  await run([0, 1, 2], 5, 8);
  t.equal(dl[0].outerStep, 2);
  const w0 = bytesOf(models[0].getWeights());
  t.same(bytesOf(models[1].getWeights()), w0);
  t.same(bytesOf(models[2].getWeights()), w0);
  t.equal(tf.memory().numTensors, afterFirst, 'no tensor leaked by the outer steps');

  // a newcomer with other weights: connect() resolves when the members vote at their next outer step
  models.push(mlp(99));
  opts.push(tf.train.adam(0.01));
  const joining = connect().then(async (c) => {
    const d = new TfjsDiLoCo(c, { model: models[3], innerSteps: 4 });
    await d.join({ strategy: 'receiveOnly' });
    return d;
  });
  // The members must see it waiting before their next vote (connecting starts the control thread first).
  await waitFor(() => comms[0].arePeersPending(), 30_000, 'the newcomer pending');
  await run([0, 1, 2], 9, 12);
  dl.push(await joining);
  t.same(bytesOf(models[3].getWeights()), bytesOf(models[0].getWeights()), 'the newcomer received the weights');
  t.equal(dl[3].innerStep, 12);
  await run([0, 1, 2, 3], 13, 16);
  for (let i = 1; i < 4; i++) t.same(bytesOf(models[i].getWeights()), bytesOf(models[0].getWeights()), `peer ${i} identical after the 4th outer step`);
  t.equal(dl[0].stats.allReduces, 4);
});

t.test('async TfjsDiLoCo and TfjsStreamingDiLoCo on tf.Variables grouped by layer', async (t) => {
  const { comms } = await inProcessGroup(t, 2);
  let made = 0;
  const makeLayers = (seed: number): TfjsLayer[] =>
    ['a', 'b', 'c', 'd'].map((name, j) => ({
      name,
      variables: [tf.variable(tf.randomNormal([8, 6 + j], 0, 1, 'float32', seed + j), true, `${name}/w${made}`), tf.variable(tf.zeros([6 + j]), true, `${name}/b${made++}`)],
    }));
  const drift = (layers: TfjsLayer[], peer: number, step: number) =>
    tf.tidy(() => layers.forEach((l) => l.variables.forEach((v) => v.assign(tf.add(v, tf.mul(tf.sin(tf.add(tf.range(0, v.size).reshape(v.shape), step)), 0.01 * (peer + 1)))))));

  const la = comms.map(() => makeLayers(1));
  const as = comms.map((c, i) => new TfjsDiLoCo(c, { model: la[i], innerSteps: 3, async: true, tagBase: 2000 }));
  await Promise.all(as.map((a) => a.join()));
  const before = tf.memory().numTensors;
  for (let s = 1; s <= 9; s++) {
    la.forEach((l, i) => drift(l, i, s));
    await Promise.all(as.map((a) => a.step()));
  }
  await Promise.all(as.map((a) => a.finish()));
  t.same(bytesOf(la[1].flatMap((l) => l.variables)), bytesOf(la[0].flatMap((l) => l.variables)), 'async: identical after finish()');
  t.equal(tf.memory().numTensors, before, 'async: no tensor leak');

  const ls = comms.map((_, i) => makeLayers(10 + i));
  const sds = comms.map((c, i) => new TfjsStreamingDiLoCo(c, { model: ls[i], fragments: 2, innerSteps: 8, overlapSteps: 1, tagBase: 3000 }));
  t.same(sds[0].fragmentLayers, [['a', 'b'], ['c', 'd']], 'fragments are whole consecutive layers');
  await Promise.all(sds.map((s) => s.join()));
  t.same(bytesOf(ls[1].flatMap((l) => l.variables)), bytesOf(ls[0].flatMap((l) => l.variables)), 'join: one set of weights');
  const start = tf.memory().numTensors;
  for (let s = 1; s <= 16; s++) {
    ls.forEach((l, i) => drift(l, i, s));
    const before = ls[0].map((l) => bytesOf(l.variables));
    const reports = await Promise.all(sds.map((sd) => sd.step()));
    const after = ls[0].map((l) => bytesOf(l.variables));
    const landed = new Set((reports[0]?.landed ?? []).flatMap((p) => sds[0].fragmentLayers[p]));
    // a fragment's layers change when it lands (the outer mix), and only then
    ls[0].forEach((l, j) => t.equal(!before[j].equals(after[j]), landed.has(l.name), `step ${s}: layer ${l.name} ${landed.has(l.name) ? 'mixed' : 'untouched'}`));
  }
  await Promise.all(sds.map((s) => s.finish()));
  for (let p = 0; p < 2; p++) t.same(Buffer.from(sds[1].optimizer.outerParams(p).slice().buffer), Buffer.from(sds[0].optimizer.outerParams(p).slice().buffer));
  t.equal(tf.memory().numTensors, start, 'streaming: no tensor leak');
  t.throws(() => new TfjsStreamingDiLoCo(comms[0], { model: ls[0], fragments: 5, innerSteps: 10 }), /exceeds the number of layers with trainable weights \(4\)/);
});
