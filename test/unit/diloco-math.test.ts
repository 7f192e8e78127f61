import t from 'tap';
import { createOuterOptimizer, DiLoCo, fragmentOffsets, fragmentsDueAt, partitionTensors, StreamingDiLoCo, normalizeParams } from '../../lib/diloco/index';
import { InProcessGroup } from '../helpers/diloco-in-process';

const f32 = (a: number[]) => new Float32Array(a);

t.test('Nesterov outer step matches a hand-computed reference', async (t) => {
  const opt = createOuterOptimizer(); // nesterov, lr 0.7, momentum 0.9
  t.equal(opt.type, 'nesterov');
  t.equal(opt.lr, 0.7);
  t.equal(opt.momentum, 0.9);
  const p = f32([1, -2, 0.5]);
  const m = new Float32Array(3);
  const g1 = f32([0.1, -0.2, 0]);
  opt.step(p, g1, m);
  // m1 = g1; p1 = p0 - 0.7 * (g1 + 0.9 * m1) = p0 - 1.33 * g1
  const m1 = g1.map((g) => Math.fround(g));
  const p1 = f32([1 - 0.7 * (0.1 + 0.9 * m1[0]), -2 - 0.7 * (-0.2 + 0.9 * m1[1]), 0.5]);
  t.same([...m], [...m1]);
  t.same([...p], [...p1]);
  const g2 = f32([0.3, 0.1, -1]);
  opt.step(p, g2, m);
  // m2 = 0.9 m1 + g2; p2 = p1 - 0.7 (g2 + 0.9 m2)
  const m2 = f32([0.9 * m1[0] + g2[0], 0.9 * m1[1] + g2[1], 0.9 * m1[2] + g2[2]]);
  const p2 = f32([0, 1, 2].map((i) => p1[i] - 0.7 * (g2[i] + 0.9 * m2[i])));
  t.same([...m], [...m2]);
  t.same([...p], [...p2]);
  t.ok(Math.abs(p[0] - (1 - 1.33 * 0.1 - 0.7 * (0.3 + 0.9 * (0.09 + 0.3)))) < 1e-6, 'close to the real-number value');
});

t.test('plain SGD and heavy-ball SGD', async (t) => {
  const sgd = createOuterOptimizer({ type: 'sgd', lr: 0.5 });
  t.equal(sgd.hasMomentum, false);
  const p = f32([1, 2]);
  sgd.step(p, f32([2, -2]));
  t.same([...p], [0, 3]);
  const hb = createOuterOptimizer({ type: 'sgd', lr: 1, momentum: 0.5 });
  const q = f32([0, 0]);
  const m = new Float32Array(2);
  hb.step(q, f32([1, 2]), m); // m = g; q -= m
  hb.step(q, f32([1, 2]), m); // m = 0.5 g + g = 1.5 g; q -= 1.5 g
  t.same([...m], [1.5, 3]);
  t.same([...q], [-2.5, -5]);
});

t.test('outer optimizer validation', async (t) => {
  t.throws(() => createOuterOptimizer({ lr: 0 }), /"outer.lr" must be a finite number > 0/);
  t.throws(() => createOuterOptimizer({ lr: NaN }), /outer.lr/);
  t.throws(() => createOuterOptimizer({ momentum: 1 }), /must be < 1/);
  t.throws(() => createOuterOptimizer({ momentum: -0.1 }), /outer.momentum/);
  t.throws(() => createOuterOptimizer({ type: 'nesterov', momentum: 0 }), /use type "sgd"/);
  t.throws(() => createOuterOptimizer({ type: 'adam' as never }), /"outer.type" must be one of "nesterov", "sgd", got "adam"/);
  t.throws(() => createOuterOptimizer({ lr: 1, learningRate: 2 } as never), /Unknown outer optimizer option "learningRate"/);
  const o = createOuterOptimizer();
  t.throws(() => o.step(f32([1]), f32([1, 2]), f32([0])), /gradient has 2 elements/);
  t.throws(() => o.step(f32([1]), f32([1])), /momentum buffer/);
});

t.test('fragments: sequential and strided partitions, offsets and schedule', async (t) => {
  const sizes = [100, 10, 100, 10, 100, 10, 100, 10];
  const tensors = normalizeParams(sizes.map((n) => new Float32Array(n)));
  const seq = partitionTensors(tensors, 4, 'sequential');
  t.same(seq, [[0, 1], [2, 3], [4, 5], [6, 7]]);
  t.same(partitionTensors(tensors, 3, 'strided'), [[0, 3, 6], [1, 4, 7], [2, 5]]);
  // every fragment gets a tensor even when one tensor dominates
  const skew = normalizeParams([new Float32Array(1000), new Float32Array(1), new Float32Array(1), new Float32Array(1)]);
  t.same(partitionTensors(skew, 4), [[0], [1], [2], [3]]);
  t.throws(() => partitionTensors(tensors, 9), /exceeds the number of parameter tensors \(8\)/);
  t.throws(() => partitionTensors(tensors, 2, 'zigzag' as never), /"fragmentPattern" must be one of/);
  t.same(fragmentOffsets(4, 100), [0, 25, 50, 75]);
  t.same(fragmentsDueAt(100, 100, [0, 25, 50, 75]), [0]);
  t.same(fragmentsDueAt(125, 100, [0, 25, 50, 75]), [1]);
  t.same(fragmentsDueAt(126, 100, [0, 25, 50, 75]), []);
});

t.test('parameter validation', async (t) => {
  t.throws(() => normalizeParams([1, 2] as never), /"params.t0" must be a Float32Array/);
  t.throws(() => normalizeParams(new Float64Array(3) as never), /"params" must be a Float32Array, an array/);
  t.throws(() => normalizeParams([]), /holds no tensors/);
  t.throws(() => normalizeParams([new Float32Array(0)]), /is empty/);
  const buf = new Float32Array(10);
  t.throws(() => normalizeParams({ a: buf.subarray(0, 6), b: buf.subarray(5) }), /"a" and "b" overlap in memory/);
  t.doesNotThrow(() => normalizeParams({ a: buf.subarray(0, 5), b: buf.subarray(5) }));
});

t.test('DiLoCo and StreamingDiLoCo option validation', async (t) => {
  const { members } = InProcessGroup.create(1);
  const c = members[0];
  const params = new Float32Array(8);
  t.throws(() => new DiLoCo({} as never, { params }), /first argument must be a Communicator/);
  t.throws(() => new DiLoCo(c, { params, innerSteps: 0 }), /"innerSteps" must be an integer >= 1, got 0/);
  t.throws(() => new DiLoCo(c, { params, innerSteps: 2.5 }), /"innerSteps" must be an integer/);
  t.throws(() => new DiLoCo(c, { params, innerStep: 5 } as never), /Unknown DiLoCo option "innerStep"/);
  t.throws(() => new DiLoCo(c, { params, quantization: { codec: 'int8' } as never }), /"quantization.codec" must be one of "uint8", "uint4", "float16", "bfloat16"/);
  t.throws(() => new DiLoCo(c, { params, async: 'yes' } as never), /"async" must be a boolean/);
  t.throws(() => new DiLoCo(c, { params, outer: { lr: -1 } }), /outer.lr/);
  const tensors = [0, 1, 2, 3].map(() => new Float32Array(4));
  t.throws(() => new StreamingDiLoCo(c, { params: tensors, fragments: 4, innerSteps: 3 }), /"innerSteps" \(3\) must be >= "fragments" \(4\)/);
  t.throws(() => new StreamingDiLoCo(c, { params: tensors, fragments: 4, innerSteps: 100, overlapSteps: 25 }), /"overlapSteps" \(25\) must be < innerSteps \/ fragments \(25\)/);
  t.throws(() => new StreamingDiLoCo(c, { params: tensors, fragments: 4, alpha: 1.5 }), /"alpha" must be a finite number >= 0 and <= 1, got 1.5/);
  t.throws(() => new StreamingDiLoCo(c, { params: tensors, fragments: 5 }), /exceeds the number of parameter tensors/);
  await t.rejects(new DiLoCo(c, { params }).step(), /Call DiLoCo.join\(\) before/);
});
