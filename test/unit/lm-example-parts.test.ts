// The language-model example's pieces that decide what the bench compares: the three splits of the text (tuning
// reads only validation, the bench reports only held-out, neither overlaps training) and the inner learning-rate
// schedule that data parallel and every DiLoCo worker follow.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadCorpus } from '../../examples/lm/data';
import { lrAt } from '../../examples/lm/schedule';

t.test('training, validation and held-out splits are disjoint blocks that cover the text', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tccl-lm-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  // 40 blocks of 4,096 characters; block b is one character repeated, a different one per block
  const ch = (b: number) => String.fromCharCode(48 + b);
  const text = Array.from({ length: 40 }, (_, b) => ch(b).repeat(4096)).join('');
  const file = path.join(dir, 'text.txt');
  fs.writeFileSync(file, text);
  const c = loadCorpus(file);
  t.equal(c.train.length + c.validation.length + c.heldOut.length, text.length, 'every character in exactly one split');
  t.equal(c.validation.length, 2 * 4096, 'one block in 20 for validation');
  t.equal(c.heldOut.length, 2 * 4096, 'one block in 20 held out');
  const letters = (u: Uint8Array) => new Set([...u].map((i) => c.chars[i]));
  t.same([...letters(c.validation)].sort(), [ch(9), ch(29)], 'validation: blocks 9 and 29');
  t.same([...letters(c.heldOut)].sort(), [ch(19), ch(39)], 'held out: blocks 19 and 39');
  const train = letters(c.train);
  t.equal(train.size, 36);
  for (const b of [9, 19, 29, 39]) t.notOk(train.has(ch(b)), `training never sees block ${b}`);
});

t.test('learning-rate schedule: constant, and cosine with linear warm-up', async (t) => {
  const s = { lr: 0.01, kind: 'cosine' as const, warmup: 50, minRatio: 0.1, total: 1050 };
  t.equal(lrAt({ ...s, kind: 'constant' }, 7), 0.01);
  t.equal(lrAt(s, 1), 0.01 / 50, 'warm-up starts small');
  t.equal(lrAt(s, 25), 0.005);
  t.equal(lrAt(s, 50), 0.01, 'peak at the end of warm-up');
  t.ok(Math.abs(lrAt(s, 550) - 0.0055) < 1e-12, 'half-way down the cosine: (1 + 0.1) / 2 of the peak');
  t.ok(Math.abs(lrAt(s, 1050) - 0.001) < 1e-12, 'ends at minRatio x lr');
  t.ok(Math.abs(lrAt(s, 2000) - 0.001) < 1e-12, 'stays there past the end');
  let rising = 0;
  for (let k = 51; k < 1050; k++) if (lrAt(s, k + 1) > lrAt(s, k)) rising++;
  t.equal(rising, 0, 'never rises after the warm-up');
});

t.test('each worker draws its windows from its own blocks, spread over the whole text', async (t) => {
  const { sampleBatch } = await import('../../examples/lm/data');
  // 64 blocks of 4,096 characters, block b filled with the value b
  const data = new Uint8Array(64 * 4096);
  for (let b = 0; b < 64; b++) data.fill(b, b * 4096, (b + 1) * 4096);
  const context = 32;
  const x = new Int32Array(8 * context);
  const y = new Int32Array(8 * context);
  const seen: Set<number>[] = [];
  let crossing = 0;
  for (let shard = 0; shard < 4; shard++) {
    seen[shard] = new Set();
    for (let step = 1; step <= 200; step++) {
      sampleBatch(data, shard, 4, step, 1, x, y, context);
      for (let i = 0; i < x.length; i++) {
        if (x[i] !== y[i]) crossing++;
        seen[shard].add(x[i]);
      }
    }
    t.ok([...seen[shard]].every((b) => b % 4 === shard), `shard ${shard} reads only blocks ${shard}, ${shard + 4}, ...`);
    t.equal(seen[shard].size, 16, `shard ${shard} reaches all of its 16 blocks, from the start of the text to the end`);
  }
  t.equal(crossing, 0, 'a window and its target stay inside one block');
  t.throws(() => sampleBatch(data.subarray(0, 3 * 4096), 0, 4, 1, 1, x, y, context), /too short for 4 shards/);
});
