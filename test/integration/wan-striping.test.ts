// One all-reduce is striped over all K connections of each link, evenly enough that a link whose connections are
// each capped (a window-limited WAN path) runs at the rate of all of them. Three engines behind the WAN emulator
// (100 Mbit/s per connection, 1 Gbit/s per link); the emulator counts the bytes of every connection.
// A regression test: frames that become ready one at a time (ring forwards, quantized results) once all went to
// the first few connections of a link, which carried 10x what the others did.
import t from 'tap';
import { Engine } from '../../lib/engine';
import { WanEmulator, WanMesh, realHost } from '../harness/wan/emulator';

const linux = process.platform === 'linux';
const K = 8;
const ELEMS = (32 << 20) / 4;

t.test('an all-reduce spreads its bytes evenly over the K connections of every link', { skip: linux ? false : 'Linux only' }, async (t) => {
  const emu = await WanEmulator.start();
  const engines = Array.from({ length: 3 }, (_, i) => Engine.create({ host: realHost(i), connections: K }));
  const mesh = await WanMesh.create(emu, engines.map((e, i) => ({ host: realHost(i), port: e.port })), { delayMs: 5, connMbps: 100, aggMbps: 1000 });
  t.teardown(async () => {
    for (const e of engines) await e.close();
    await mesh.close();
    await emu.close();
  });
  engines.forEach((e, i) => e.configure(1, i, mesh.addresses[i].map((a, j) => ({ id: `peer-${j}`, host: a.host, port: a.port }))));
  const bufs = engines.map(() => new Float32Array(ELEMS));
  let tag = 1;
  // uint8 moves a quarter of the bytes in a handful of frames per connection, so frame granularity alone allows
  // more spread: more operations and a looser bound (the imbalance this guards against was 10x).
  for (const [codec, ops, bound] of [['float32', 2, 3], ['uint8', 4, 4]] as const) {
    const quantization = codec === 'uint8' ? ({ codec } as const) : undefined;
    const before = new Map((await emu.stats()).connections.map(([route, bytes], i) => [`${route}/${i}`, bytes]));
    for (let r = 0; r < ops; r++) {
      bufs.forEach((b, i) => b.fill(i + 1));
      await Promise.all(engines.map((e, i) => e.allReduce(bufs[i], { tag, timeoutMs: 60_000, quantization })));
      tag++;
      for (const b of bufs) t.ok(Math.abs(b[0] - 6) < 0.1 && Math.abs(b[ELEMS - 1] - 6) < 0.1, `${codec}: the result is the sum`);
    }
    const perRoute = new Map<number, number[]>();
    (await emu.stats()).connections.forEach(([route, bytes], i) => {
      const moved = bytes - (before.get(`${route}/${i}`) ?? 0);
      if (!perRoute.has(route)) perRoute.set(route, []);
      perRoute.get(route)!.push(moved);
    });
    const used = [...perRoute.values()].filter((xs) => xs.some((x) => x > 1 << 20));
    t.ok(used.length >= 3, `${codec}: at least 3 links carried the all-reduces (${used.length})`);
    for (const xs of used) {
      t.equal(xs.length, K, `${codec}: the link has its ${K} connections`);
      const max = Math.max(...xs);
      const min = Math.min(...xs);
      t.ok(min * bound >= max, `${codec}: the busiest connection of a link carried at most ${bound}x the least busy (${(max / 1e6).toFixed(1)} vs ${(min / 1e6).toFixed(1)} MB)`);
    }
  }
});
