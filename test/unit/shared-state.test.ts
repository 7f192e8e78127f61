// SharedState entries, hashing and checkpoint files: round trip, atomic replace, and every kind of damage.
import t, { Test } from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { SharedState, STATE_ERROR_CODES } from '../../lib/shared-state/state';
import { hashState, hashesOf } from '../../lib/shared-state/hash';
import { StateError } from '../../lib/errors';

function sample(): SharedState {
  const w = new Float32Array(300_000);
  for (let i = 0; i < w.length; i++) w[i] = Math.sin(i) * 3;
  const h = new Uint16Array(1001).map((_, i) => (i * 2654435761) & 0xffff);
  return new SharedState(
    {
      weights: w,
      'adam.m': { data: h, dtype: 'bfloat16' },
      step: new BigInt64Array([42n, -7n]),
      empty: new Int8Array(0),
      rng: { data: new Uint32Array([1, 2, 3]), allowContentInequality: true },
    },
    { revision: 17 },
  );
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tccl-state-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

t.test('entries, dtypes and validation', async (t) => {
  const s = sample();
  t.same(s.keys(), ['weights', 'adam.m', 'step', 'empty', 'rng']);
  t.equal(s.entry('adam.m')!.dtype, 'bfloat16');
  t.equal(s.entry('rng')!.allowContentInequality, true);
  t.equal(s.byteLength, 1_200_000 + 2002 + 16 + 0 + 12);
  t.throws(() => s.set('x', new Float32Array(2), { dtype: 'float16' }), /float16/);
  t.throws(() => s.set('', new Float32Array(2)), /key/);
  t.throws(() => (s.revision = -1), /revision/);
  t.throws(() => (s.revision = 1.5), /revision/);
  t.throws(() => s.bytes('nope'), StateError);
});

t.test('hashState skips allowContentInequality entries and is deterministic', async (t) => {
  const a = await hashState(sample());
  const b = await hashState(sample());
  t.same(a, b);
  t.same(Object.keys(a.entries).sort(), ['adam.m', 'empty', 'step', 'weights']);
  t.equal(a.entries.empty.hash, 'ef46db3751d8e999', 'the empty hash is the documented constant');
  t.equal(a.revision, 17);
  const c = sample();
  c.get<Float32Array>('weights')![123] += 1;
  const hc = hashesOf(await hashState(c));
  t.not(hc.entries.weights, a.entries.weights.hash, 'one changed element changes the hash');
  t.equal(hc.entries.step, a.entries.step.hash);
});

t.test('checkpoint round trip keeps every byte, dtype, flag and the revision', async (t) => {
  const s = sample();
  const file = path.join(tmp, 'a.tccl');
  await s.save(file);
  const back = await SharedState.load(file);
  t.equal(back.revision, 17);
  t.same(back.keys(), s.keys());
  for (const e of s.entries()) {
    const b = back.entry(e.key)!;
    t.equal(b.dtype, e.dtype, `${e.key} dtype`);
    t.equal(b.allowContentInequality, e.allowContentInequality, `${e.key} flag`);
    t.equal(b.data.constructor, e.data.constructor, `${e.key} array type`);
    t.ok(Buffer.from(back.bytes(e.key)).equals(Buffer.from(s.bytes(e.key))), `${e.key} bytes`);
  }
  // Saving again replaces the file atomically and leaves no temp file behind.
  s.revision = 18;
  await s.save(file);
  t.equal((await SharedState.load(file)).revision, 18);
  t.same(fs.readdirSync(tmp).filter((f) => f.includes('a.tccl')), ['a.tccl']);
  const empty = new SharedState();
  await empty.save(path.join(tmp, 'empty.tccl'));
  t.equal((await SharedState.load(path.join(tmp, 'empty.tccl'))).size, 0);
});

t.test('saving does not block the event loop', async (t) => {
  const big = new SharedState({ a: new Float64Array(16 << 20), b: new Uint8Array(64 << 20) }); // 192 MiB
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const file = path.join(tmp, 'big.tccl');
  const t0 = Date.now();
  await big.save(file);
  const back = await SharedState.load(file);
  clearInterval(timer);
  t.equal(back.byteLength, big.byteLength);
  t.ok(ticks > 3 || Date.now() - t0 < 20, `timers kept firing during save+load (${ticks} ticks in ${Date.now() - t0} ms)`);
  fs.rmSync(file);
});

async function expectStateError(t: Test, file: string, code: string, re: RegExp) {
  try {
    await SharedState.load(file);
    t.fail(`${path.basename(file)}: loaded without error`);
  } catch (err) {
    t.type(err, StateError);
    t.equal((err as StateError).code, code, `${path.basename(file)}: ${code}: ${(err as Error).message}`);
    t.match((err as Error).message, re);
  }
}

t.test('corrupt, truncated, foreign and tampered files are clear StateErrors', async (t) => {
  const file = path.join(tmp, 'good.tccl');
  await sample().save(file);
  const good = fs.readFileSync(file);
  const variant = (name: string, bytes: Uint8Array) => {
    const p = path.join(tmp, name);
    fs.writeFileSync(p, bytes);
    return p;
  };
  await expectStateError(t, variant('magic', Buffer.concat([Buffer.from('NOTATCCL'), good.subarray(8)])), STATE_ERROR_CODES.badMagic, /not a TCCL/);
  await expectStateError(t, variant('text', Buffer.from('hello world, this is a text file')), STATE_ERROR_CODES.badMagic, /magic/);
  await expectStateError(t, variant('zero', new Uint8Array(0)), STATE_ERROR_CODES.badMagic, /magic/);
  const v2 = Buffer.from(good);
  v2.writeUInt32LE(2, 8);
  await expectStateError(t, variant('version', v2), STATE_ERROR_CODES.badVersion, /version 2/);
  await expectStateError(t, variant('prefix', good.subarray(0, 12)), STATE_ERROR_CODES.truncated, /truncated/);
  await expectStateError(t, variant('inheader', good.subarray(0, 60)), STATE_ERROR_CODES.truncated, /header/);
  await expectStateError(t, variant('short', good.subarray(0, good.length - 1000)), STATE_ERROR_CODES.truncated, /truncated/);
  await expectStateError(t, variant('long', Buffer.concat([good, Buffer.alloc(5)])), STATE_ERROR_CODES.corrupt, /unexpected bytes/);
  const hdr = Buffer.from(good);
  hdr[40] ^= 0x20; // inside the JSON header
  await expectStateError(t, variant('header', hdr), STATE_ERROR_CODES.corrupt, /checksum/);
  const data = Buffer.from(good);
  data[good.length - 500_000] ^= 1; // inside the weights
  await expectStateError(t, variant('data', data), STATE_ERROR_CODES.hashMismatch, /"weights" hashes to/);
  await t.rejects(SharedState.load(path.join(tmp, 'missing.tccl')), /ENOENT/);
});

t.test('Engine.exchange validates its arguments before anything reaches native code', async (t) => {
  const { Engine } = await import('../../lib/engine');
  const e = Engine.create({ host: '127.0.0.1', port: 0, connections: 1 });
  t.teardown(() => e.close());
  const buf = new Uint8Array(100);
  await t.rejects(e.exchange({ tag: -1 }), /tag/);
  await t.rejects(e.exchange({ sends: [{ to: 1, stream: 0, data: 'x' as any }] }), /sends\[0\]\.data/);
  await t.rejects(e.exchange({ recvs: [{ from: 1, stream: 2, data: buf }, { from: 1, stream: 2, data: new Uint8Array(4) }] }), /repeats stream 2/);
  await t.rejects(e.exchange({ recvs: [{ from: 1, stream: 0, data: buf.subarray(0, 50) }, { from: 2, stream: 0, data: buf.subarray(40) }] }), /overlap/);
  await t.rejects(e.exchange({ sends: [{ to: 1, stream: 0, data: buf.subarray(0, 10) }], recvs: [{ from: 1, stream: 1, data: buf.subarray(5, 20) }] }), /overlap/);
  await t.rejects(e.exchange({ sends: [{ to: 1, stream: 0, data: buf }, { to: 2, stream: 0, data: buf }] }), /no group is configured/, 'overlapping sends are fine (then native says no group)');
  const ac = new AbortController();
  ac.abort();
  await t.rejects(e.exchange({ signal: ac.signal }), { code: 'ABORTED' });
});
