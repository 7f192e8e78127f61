// tccl/tfjs without a network: the parameter bridge (layers, views, copies, validation) and the optimizer
// adapters, checked bit for bit against the framework-agnostic optimizers driving plain Float32Arrays.
import t from 'tap';
import * as tf from '@tensorflow/tfjs';
import { DiLoCo, StreamingDiLoCo, type Collective } from '../../lib/diloco/index';
import { TfjsDiLoCo, TfjsParameters, TfjsStreamingDiLoCo, collectLayers, type TfjsLayer } from '../../lib/tfjs/index';

let made = 0;
function layers(sizes: number[][]): TfjsLayer[] {
  return sizes.map((shapes, i) => ({
    name: `L${i}`,
    variables: shapes.map((n) => tf.variable(tf.randomNormal([n], 0, 1, 'float32', 17 + made), true, `v${made++}`)),
  }));
}

/** A group of one: the average of one peer is its input, so two optimizers over it must agree bit for bit. */
function solo(): Collective {
  return {
    worldSize: 1,
    allReduce: async (data) => ({ data, worldSize: 1, bytesSent: 0, bytesReceived: 0 }),
    updateTopology: async () => undefined,
    arePeersPending: () => false,
  };
}

/** The same pseudo-random inner-step change, applied to tfjs variables and to their plain copies. */
function drift(vars: tf.Variable[], plain: Float32Array[], step: number): void {
  vars.forEach((v, j) => {
    const x = (v.dataSync() as Float32Array).slice();
    for (let i = 0; i < x.length; i++) x[i] += 0.01 * Math.sin(step * 7 + i * 3 + j);
    const p = plain[j];
    for (let i = 0; i < p.length; i++) p[i] += 0.01 * Math.sin(step * 7 + i * 3 + j);
    const tx = tf.tensor(x, v.shape);
    v.assign(tx);
    tx.dispose();
  });
}

const bytes = (a: Float32Array[] | tf.Variable[]) => Buffer.concat(a.map((x) => Buffer.from((ArrayBuffer.isView(x) ? x : (x.dataSync() as Float32Array)).slice().buffer)));

t.before(async () => {
  await tf.setBackend('cpu');
});

t.test('TfjsParameters: layers of a LayersModel, views, read/write without aliasing or leaks', async (t) => {
  const model = tf.sequential({
    layers: [tf.layers.dense({ units: 3, inputShape: [2], name: 'd1' }), tf.layers.dropout({ rate: 0.1 }), tf.layers.dense({ units: 1, name: 'd2' })],
  });
  const p = new TfjsParameters(model);
  t.same(p.layers.map((l) => l.name), ['d1', 'd2'], 'layers without weights are left out');
  t.equal(p.size, 2 * 3 + 3 + 3 + 1);
  t.same(Object.keys(p.views), ['d1', 'd2']);
  t.equal(p.views.d1.buffer, p.flat.buffer, 'layer views share the flat buffer');
  const before = tf.memory().numTensors;
  p.read();
  t.same([...p.flat], model.getWeights().flatMap((w) => [...w.dataSync()]));
  p.views.d2.fill(0.25);
  p.write([p.layerIndex('d2')]);
  t.same([...model.getWeights()[3].dataSync()], [0.25]);
  p.views.d2.fill(9); // the cpu backend keeps a reference to a tensor's array: write() must have copied
  t.same([...model.getWeights()[3].dataSync()], [0.25], 'later writes to the views do not reach the variables');
  t.equal(tf.memory().numTensors, before, 'read and write leave no tensor behind');
  t.throws(() => p.layerIndex('nope'), /no layer named "nope"/);
  model.dispose();
});

t.test('collectLayers: accepted inputs and clear errors', async (t) => {
  const v = tf.variable(tf.zeros([4]), true, 'cl-a');
  const w = tf.variable(tf.zeros([2]), true, 'cl-b');
  t.same(collectLayers([v, w]).map((l) => l.name), ['cl-a', 'cl-b'], 'a variable list: one layer per variable');
  t.same(collectLayers([{ name: 'x', variables: [v, w] }]).map((l) => l.variables.length), [2]);
  t.throws(() => collectLayers([v, v]), /"cl-a" is listed twice/);
  t.throws(() => collectLayers([{ name: 'x', variables: [v] }, { name: 'x', variables: [w] }]), /two layers are named "x"/);
  const i = tf.variable(tf.zeros([2], 'int32'), true, 'cl-int');
  t.throws(() => collectLayers([v, i]), /"cl-int" has dtype int32; only float32/);
  t.throws(() => collectLayers([] as tf.Variable[]), /"model" must be a tf.LayersModel/);
  t.throws(() => collectLayers(new Float32Array(3) as never), /"model" must be a tf.LayersModel, .* got an object \(Float32Array\)/);
  t.throws(() => collectLayers([{ name: 'x', variables: [] }]), /no trainable float32 variables/);
  const d = tf.variable(tf.zeros([1]), true, 'cl-d');
  d.dispose();
  t.throws(() => collectLayers([d]), /"cl-d" .* is disposed/);
  t.throws(() => new TfjsDiLoCo(solo(), { params: new Float32Array(2) } as never), /pass the tfjs model as "model"/);
  t.throws(() => new TfjsDiLoCo(solo(), { model: [v], innerStep: 3 } as never), /Unknown DiLoCo option "innerStep"/);
  tf.dispose([v, w, i]);
});

t.test('TfjsDiLoCo (sync and async) equals DiLoCo on plain arrays, bit for bit', async (t) => {
  for (const async of [false, true]) {
    const ls = layers([[5, 3], [7], [4, 4]]);
    const vars = ls.flatMap((l) => l.variables);
    const plain = vars.map((v) => (v.dataSync() as Float32Array).slice());
    const a = new TfjsDiLoCo(solo(), { model: ls, innerSteps: 3, async, outer: { lr: 0.7, momentum: 0.9 } });
    const b = new DiLoCo(solo(), { params: plain, innerSteps: 3, async, outer: { lr: 0.7, momentum: 0.9 } });
    await a.join();
    await b.join();
    for (let s = 1; s <= 10; s++) {
      drift(vars, plain, s);
      await a.step();
      await b.step();
      t.same(bytes(vars), bytes(plain), `${async ? 'async' : 'sync'} step ${s}`);
    }
    await a.finish();
    await b.finish();
    t.same(bytes(vars), bytes(plain), `${async ? 'async' : 'sync'} after finish()`);
    t.same(Buffer.from(a.optimizer.outerParams.buffer), Buffer.from(b.outerParams.buffer));
    tf.dispose(vars);
  }
});

t.test('TfjsStreamingDiLoCo equals StreamingDiLoCo on plain arrays, bit for bit (tau 0, 1, 2)', async (t) => {
  for (const tau of [0, 1, 2]) {
    const ls = layers([[6], [3, 3], [8], [2, 2, 2], [5]]);
    const vars = ls.flatMap((l) => l.variables);
    const plain = vars.map((v) => (v.dataSync() as Float32Array).slice());
    // the plain optimizer sees one tensor per layer, as the adapter gives it: a flat copy of the layer
    const layerOf = ls.map((l) => l.variables.map((v) => vars.indexOf(v)));
    const flatLayers = layerOf.map((idx) => new Float32Array(idx.reduce((n, i) => n + plain[i].length, 0)));
    const toFlat = () => layerOf.forEach((idx, l) => idx.reduce((o, i) => (flatLayers[l].set(plain[i], o), o + plain[i].length), 0));
    const fromFlat = () => layerOf.forEach((idx, l) => idx.reduce((o, i) => (plain[i].set(flatLayers[l].subarray(o, o + plain[i].length)), o + plain[i].length), 0));
    toFlat();
    const opts = { fragments: 3, innerSteps: 9, overlapSteps: tau };
    const a = new TfjsStreamingDiLoCo(solo(), { model: ls, ...opts });
    const b = new StreamingDiLoCo(solo(), { params: Object.fromEntries(ls.map((l, i) => [l.name, flatLayers[i]])), ...opts });
    t.same(a.fragmentLayers, b.fragmentTensors);
    await a.join();
    await b.join();
    fromFlat();
    for (let s = 1; s <= 30; s++) {
      drift(vars, plain, s);
      toFlat();
      await a.step();
      await b.step();
      fromFlat();
      t.same(bytes(vars), bytes(plain), `tau ${tau} step ${s}`);
    }
    await a.finish();
    await b.finish();
    fromFlat();
    t.same(bytes(vars), bytes(plain), `tau ${tau} after finish()`);
    tf.dispose(vars);
  }
});

t.test('step() lets timers and sockets run between inner steps (heartbeats, overlapped all-reduces)', async (t) => {
  const ls = layers([[4], [4]]);
  const a = new TfjsDiLoCo(solo(), { model: ls, innerSteps: 100 });
  const b = new TfjsStreamingDiLoCo(solo(), { model: ls, fragments: 2, innerSteps: 100 });
  await a.join();
  await b.join();
  for (const opt of [a, b]) {
    let ran = false;
    setImmediate(() => (ran = true));
    await opt.step(); // not a sync point: without a yield only microtasks would run
    t.equal(ran, true, `${opt.constructor.name}.step() yielded to the event loop`);
  }
  tf.dispose(ls.flatMap((l) => l.variables));
});
