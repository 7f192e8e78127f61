// Quantized all-reduce over real peer processes (test/fixtures/engine-peer.ts): per-element error bounds
// against a float64 reference for every codec and input distribution, bit parity on 1 to 8 peers, error that
// does not grow with the number of peers, unbiased stochastic rounding, NaN/Inf, mismatches, bad options,
// concurrent tags and a peer lost mid-operation.
import t, { Test } from 'tap';
import { Engine } from '../../lib/engine';
import { runQ } from '../helpers/quantized';
import { PeerHandle, configure, startRing, stopAll } from '../helpers/ring';

const CODECS = ['uint8', 'uint4', 'float16', 'bfloat16'] as const;
// Largest RMS error relative to the result's RMS for normal data (observed values are 3-10x smaller).
const RMS_LIMIT = { uint8: 0.02, uint4: 0.3, float16: 1e-3, bfloat16: 8e-3 };

function samePeers(tt: Test, results: any[][], i: number, label: string) {
  const per = results.map((r) => r[i]);
  tt.ok(per.every((r) => r.ok), `${label}: succeeded everywhere ${per.find((r) => !r.ok)?.message ?? ''}`);
  tt.equal(new Set(per.map((r) => r.hash)).size, 1, `${label}: all ${per.length} peers hold identical bytes`);
}

function withinBound(tt: Test, r: any, label: string) {
  tt.equal(r.stats.violations, 0, `${label}: every element within its error bound (worst ${r.stats.worstRatio.toFixed(3)} of the bound) ${r.stats.firstViolation ?? ''}`);
}

t.test('3 peers: every codec x distribution x dtype within its error bound, all ops in flight at once', async (t) => {
  const peers = await startRing(3);
  t.teardown(() => stopAll(peers));
  const ops: any[] = [];
  let tag = 100;
  for (const codec of CODECS) {
    for (const dist of ['normal', 'uniform', 'heavy', 'constant'] as const) {
      // Block sizes that do not divide the chunks; sum and avg; one out-of-place op per codec.
      const blockSize = [256, 100, 7, 1000][tag % 4];
      ops.push({ count: 30_011, dist, seed: tag, tag: tag++, op: tag % 2 ? 'sum' : 'avg', quantization: { codec, blockSize }, outOfPlace: dist === 'uniform' });
    }
    ops.push({ count: 20_000, dist: 'normal', seed: tag, tag: tag++, quantization: { codec, blockSize: 33, stochastic: true, seed: 5 } });
    for (const dtype of ['float64', 'float16', 'bfloat16'] as const) {
      ops.push({ count: 9_999, dtype, dist: 'uniform', seed: tag, tag: tag++, quantization: { codec, blockSize: 128 } });
    }
  }
  const results = await runQ(peers, (p) => ops.map((o, i) => ({ ...o, stats: p.rank === 0, delayMs: (p.rank * 3 + i) % 4 })));
  ops.forEach((o, i) => {
    const label = `${o.quantization.codec}${o.quantization.stochastic ? ' stochastic' : ''} ${o.dtype ?? 'float32'} ${o.dist} ${o.op ?? 'avg'} block ${o.quantization.blockSize}`;
    samePeers(t, results, i, label);
    const r = results[0][i];
    const codec = o.quantization.codec;
    if (!r.ok) return;
    withinBound(t, r, label);
    if (o.outOfPlace) t.ok(results.every((x) => x[i].inputIntact), `${label}: out-of-place leaves the input alone`);
    if (o.dist === 'constant' && (codec === 'uint8' || codec === 'uint4')) t.ok(r.stats.rms <= 1e-6 * r.stats.refRms, `${label}: constant blocks are (nearly) exact: rms ${r.stats.rms}`);
    if (o.dist === 'normal' && !o.dtype) {
      const limit = RMS_LIMIT[o.quantization.codec as keyof typeof RMS_LIMIT];
      t.ok(r.stats.rms <= limit * r.stats.refRms, `${label}: relative RMS error ${(r.stats.rms / r.stats.refRms).toExponential(2)} <= ${limit}`);
    }
  });
  // Bytes on the wire: each peer sends about 2 (n-1)/n of the encoded tensor (uint8: a quarter of float32).
  const u8 = ops.findIndex((o) => o.quantization.codec === 'uint8' && o.dist === 'normal' && !o.dtype && !o.quantization.stochastic);
  const sent = results[1][u8].bytesSent;
  const floatBytes = (2 * 2 / 3) * 30_011 * 4;
  t.ok(sent < floatBytes * 0.3, `uint8 sends ${sent} bytes vs ${Math.round(floatBytes)} for float32 ring`);
});

t.test('1 to 8 peers: bit parity, bounds, and RMS error at 8 peers <= 1.25x the error at 2 peers', async (t) => {
  const all = await startRing(8);
  t.teardown(() => stopAll(all));
  const rms: Record<string, Record<number, number>> = {};
  let epoch = 2;
  for (const n of [2, 3, 5, 6, 8, 1]) {
    const peers = all.slice(0, n);
    await configure(peers, { epoch });
    epoch++;
    const ops = [
      ...CODECS.map((codec, i) => ({ count: 48_000, dist: 'normal', seed: 7, tag: i, op: 'avg', quantization: { codec, blockSize: 256 } })),
      { count: n - 1, dist: 'uniform', tag: 10, quantization: { codec: 'uint4', blockSize: 3 } },
      { count: 0, tag: 11, quantization: { codec: 'uint8' } },
      { count: 10_007, dist: 'heavy', tag: 12, op: 'sum', quantization: { codec: 'uint8', blockSize: 64, stochastic: true } },
    ];
    const results = await runQ(peers, (p) => ops.map((o) => ({ ...o, stats: p.rank === 0 && o.count > 0 })));
    ops.forEach((o, i) => {
      const label = `n=${n} ${o.quantization.codec} count ${o.count}`;
      samePeers(t, results, i, label);
      if (results[0][i].ok && o.count > 0) withinBound(t, results[0][i], label);
      if (results[0][i].ok) t.equal(results[0][i].worldSize, n, `${label}: world size`);
    });
    CODECS.forEach((codec, i) => ((rms[codec] ??= {})[n] = results[0][i].stats?.rms ?? NaN));
  }
  for (const codec of CODECS) {
    const ratio = rms[codec][8] / rms[codec][2];
    t.ok(ratio <= 1.25, `${codec}: RMS error (avg) at 8 peers / 2 peers = ${ratio.toFixed(3)} <= 1.25 (${Object.entries(rms[codec]).map(([k, v]) => `${k}:${v.toExponential(2)}`).join(' ')})`);
  }
});

t.test('stochastic rounding is unbiased on average; nearest rounding of the same data is not', async (t) => {
  const peers = await startRing(2);
  t.teardown(() => stopAll(peers));
  const base = { count: 8192, dist: 'bias', op: 'avg', repeat: 24 };
  const results = await runQ(peers, (p) => [
    { ...base, tag: 1, quantization: { codec: 'uint4', blockSize: 16, stochastic: true, seed: 42 }, stats: p.rank === 0 },
    { ...base, tag: 2, repeat: 1, quantization: { codec: 'uint4', blockSize: 16 }, stats: p.rank === 0 },
  ]);
  samePeers(t, results, 0, 'stochastic');
  samePeers(t, results, 1, 'nearest');
  const s = results[0][0];
  const nearest = results[0][1];
  withinBound(t, s, 'stochastic');
  withinBound(t, nearest, 'nearest');
  t.ok(Math.abs(nearest.stats.mean) > 0.15, `nearest: mean error ${nearest.stats.mean.toFixed(4)} (biased, as expected for k + 0.3)`);
  t.ok(Math.abs(s.stats.mean) < 0.02, `stochastic, one run: mean error ${s.stats.mean.toFixed(4)} ~ 0`);
  t.ok(Math.abs(s.meanStats.mean) < 0.01, `stochastic, mean of 24 runs: mean error ${s.meanStats.mean.toFixed(4)} ~ 0`);
  t.ok(s.meanStats.rms < 0.4 * s.stats.rms, `per-element error shrinks when runs are averaged: ${s.meanStats.rms.toFixed(4)} vs ${s.stats.rms.toFixed(4)} for one run`);
});

t.test('NaN/Inf, mismatched options and bad ops: clear errors on every peer, buffers intact', async (t) => {
  const peers = await startRing(3);
  t.teardown(() => stopAll(peers));
  const count = 30_000;
  // NaN in a chunk that another peer owns (caught when rank1 encodes it), Inf in rank1's own chunk (caught when
  // rank1 reduces its chunk).
  for (const [index, value, tag] of [[5, 'nan', 21], [count / 2, 'inf', 22]] as const) {
    const res = await runQ(peers, [{ count, tag, poison: { rank: 1, index, value }, quantization: { codec: 'uint8' } }]);
    for (const r of res) {
      t.equal(r[0].error, 'TypeError', `${value}: every peer fails with TypeError (code INVALID_ARGUMENT): ${r[0].message}`);
      t.match(r[0].message, /rank1/, `${value}: the message names the peer`);
      t.match(r[0].message, new RegExp(`tag ${tag}`), `${value}: the message names the tag`);
      t.match(r[0].message, value === 'nan' ? /NaN/ : /Inf/, `${value}: the message names the value`);
      t.equal(r[0].inputIntact, true, `${value}: input intact`);
    }
  }
  const mismatches: [string, (rank: number) => any][] = [
    ['codec', (rank) => ({ codec: rank === 2 ? 'uint4' : 'uint8' })],
    ['block size', (rank) => ({ codec: 'uint8', blockSize: rank === 0 ? 128 : 256 })],
    ['quantized vs not', (rank) => (rank === 1 ? null : { codec: 'float16' })],
  ];
  let tag = 30;
  for (const [what, q] of mismatches) {
    const res = await runQ(peers, (p) => [{ count: 5000, tag, quantization: q(p.rank), timeoutMs: 10_000 }]);
    tag++;
    for (const r of res) {
      t.equal(r[0].code, 'MISMATCH', `${what}: MismatchError on every peer: ${r[0].message}`);
      t.equal(r[0].inputIntact, true, `${what}: input intact`);
    }
  }
  const bad = await runQ(peers.slice(0, 1), [{ count: 10, op: 'max', tag: 40, quantization: { codec: 'uint8' } }]);
  t.equal(bad[0][0].error, 'TypeError', `op max with quantization is refused: ${bad[0][0].message}`);
  t.match(bad[0][0].message, /sum and avg/);
  // The group still works afterwards.
  const ok = await runQ(peers, [{ count: 1000, tag: 41, quantization: { codec: 'uint4', blockSize: 50 } }]);
  samePeers(t, ok, 0, 'after the errors');
});

t.test('in-process checks of the options: non-float dtypes and unknown codecs are refused; one peer quantizes', async (t) => {
  const engine = Engine.create({ host: '127.0.0.1', port: 0, connections: 1 });
  t.teardown(() => engine.close());
  engine.configure(1, 0, [{ id: 'solo', host: '127.0.0.1', port: engine.port }]);
  await t.rejects(engine.allReduce(new Int32Array(4), { quantization: { codec: 'uint8' } }), TypeError, 'int32 refused');
  await t.rejects(engine.allReduce(new Float32Array(4), { op: 'prod', quantization: { codec: 'uint8' } }), TypeError, 'prod refused');
  await t.rejects(engine.allReduce(new Float32Array(4), { quantization: { codec: 'int2' as any } }), TypeError, 'unknown codec refused');
  const x = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i));
  const r = await engine.allReduce(x.slice(), { quantization: { codec: 'uint8', blockSize: 64 } });
  const err = Math.max(...Array.from(r.data, (v, i) => Math.abs(v - x[i])));
  t.ok(err <= 2 / 255 / 2 + 1e-6, `one peer: the result is the input quantized once (max error ${err})`);
});

t.test('a peer lost mid-operation: PeerLostError on the survivors, in-place buffers hold their input', async (t) => {
  let peers: PeerHandle[] = await startRing(3);
  t.teardown(() => stopAll(peers));
  // Peer 2 never joins and is killed while the others wait for its contributions.
  const pending = runQ(peers.slice(0, 2), [{ count: 2_000_000, quantization: { codec: 'uint8' }, timeoutMs: 20_000 }]);
  await new Promise((r) => setTimeout(r, 300));
  peers[2].kill();
  for (const r of await pending) {
    t.equal(r[0].code, 'PEER_LOST', `PeerLostError: ${r[0].message}`);
    t.equal(r[0].inputIntact, true, 'input intact');
  }
  await stopAll(peers);
  // All join; one is killed while data is on the wire.
  peers = await startRing(3);
  const onWire = runQ(peers, [{ count: 6_000_000, quantization: { codec: 'uint4', blockSize: 64 }, timeoutMs: 20_000 }]);
  await new Promise((r) => setTimeout(r, 150));
  peers[1].kill();
  const res = await onWire;
  for (const k of [0, 2]) {
    const r = res[k][0];
    if (r.ok) t.pass(`peer ${k} had finished before the kill`);
    else {
      t.equal(r.code, 'PEER_LOST', `peer ${k}: PeerLostError (${r.message})`);
      t.equal(r.inputIntact, true, `peer ${k}: buffer restored to its input`);
    }
  }
});
