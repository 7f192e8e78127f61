// The user-space WAN emulator (bench/wan): delay, per-connection cap, aggregate cap, link cut, clean stop.
// Bounds are deliberately generous (a busy 2-core CI machine); precise figures belong in bench/wan.
import t from 'tap';
import * as net from 'node:net';
import { WanEmulator } from '../harness/wan/emulator';

const linux = process.platform === 'linux';

function listen(server: net.Server, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve((server.address() as net.AddressInfo).port));
  });
}

function connect(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port }, () => resolve(s));
    s.setNoDelay(true);
    s.once('error', reject);
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('WAN emulator', { skip: linux ? false : 'Linux only' }, async (t) => {
  const emu = await WanEmulator.start();
  const sockets = new Set<net.Socket>();
  const servers: net.Server[] = [];
  t.teardown(async () => {
    for (const s of sockets) s.destroy();
    for (const s of servers) s.close();
    await emu.close();
  });
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
    return s;
  };

  // An echo server on its own address, reached through the emulated address.
  const echo = net.createServer((s) => track(s).pipe(s));
  servers.push(echo);
  const echoPort = await listen(echo, '127.0.22.1');

  async function pingPong(port: number, rounds: number): Promise<number> {
    const s = track(await connect('127.0.12.1', port));
    const rtts: number[] = [];
    for (let i = 0; i < rounds; i++) {
      const t0 = performance.now();
      await new Promise<void>((resolve) => {
        s.once('data', () => resolve());
        s.write('ping');
      });
      rtts.push(performance.now() - t0);
    }
    s.destroy();
    return median(rtts);
  }

  await t.test('RTT through the emulator is about twice the one-way delay', async (t) => {
    await emu.setLink(1, { delayMs: 25 });
    await emu.setLink(2, { delayMs: 25 });
    await emu.setLink(3, { delayMs: 0 });
    const slow = await emu.addRoute({ listenHost: '127.0.12.1', targetHost: '127.0.22.1', targetPort: echoPort, fwdLink: 1, revLink: 2 });
    const fast = await emu.addRoute({ listenHost: '127.0.12.1', targetHost: '127.0.22.1', targetPort: echoPort, fwdLink: 3, revLink: 3 });
    const rtt = await pingPong(slow.port, 7);
    const rtt0 = await pingPong(fast.port, 7);
    t.comment(`median RTT ${rtt.toFixed(1)} ms with 25 ms each way, ${rtt0.toFixed(2)} ms with no delay`);
    t.ok(rtt >= 49 && rtt < 90, `RTT ${rtt.toFixed(1)} ms is about 50 ms`);
    t.ok(rtt0 < 15, `RTT without delay ${rtt0.toFixed(2)} ms is small`);
  });

  // A sink that counts bytes per connection.
  let counts = new Map<net.Socket, number>(); // connections of the current measurement only
  const sink = net.createServer((s) => {
    track(s);
    const mine = counts;
    mine.set(s, 0);
    s.on('data', (d: Buffer) => mine.set(s, (mine.get(s) ?? 0) + d.length));
  });
  servers.push(sink);
  const sinkPort = await listen(sink, '127.0.22.2');

  /** K connections writing as fast as they may; returns the total and per-connection Mbit/s at the sink. */
  async function throughput(port: number, k: number): Promise<{ total: number; perConn: number[] }> {
    counts = new Map();
    const chunk = Buffer.alloc(64 * 1024, 7);
    const clients = await Promise.all(Array.from({ length: k }, () => connect('127.0.12.2', port)));
    let stop = false;
    for (const c of clients) {
      track(c);
      const pump = () => {
        while (!stop && c.write(chunk));
      };
      c.on('drain', pump);
      pump();
    }
    await sleep(400); // past the start-up burst (socket buffers filling)
    const a = new Map(counts);
    const t0 = performance.now();
    await sleep(1200);
    const secs = (performance.now() - t0) / 1000;
    const perConn = [...counts].map(([s, n]) => ((n - (a.get(s) ?? 0)) * 8) / secs / 1e6);
    stop = true;
    for (const c of clients) c.destroy();
    return { total: perConn.reduce((x, y) => x + y, 0), perConn };
  }

  await t.test('a connection is capped, and K connections share the aggregate cap', async (t) => {
    await emu.setLink(4, { delayMs: 5, connMbps: 40, aggMbps: 100 });
    await emu.setLink(5, { delayMs: 5 });
    await emu.setLink(6, { delayMs: 5, connMbps: 40, aggMbps: 100 }); // a twin of link 4, for the second measurement
    const r = await emu.addRoute({ listenHost: '127.0.12.2', targetHost: '127.0.22.2', targetPort: sinkPort, fwdLink: 4, revLink: 5 });
    const r2 = await emu.addRoute({ listenHost: '127.0.12.2', targetHost: '127.0.22.2', targetPort: sinkPort, fwdLink: 6, revLink: 5 });
    const one = await throughput(r.port, 1);
    t.comment(`1 connection: ${one.total.toFixed(1)} Mbit/s (cap 40)`);
    t.ok(one.total > 20 && one.total < 52, `1 connection gets about its 40 Mbit/s cap (${one.total.toFixed(1)})`);
    const four = await throughput(r2.port, 4);
    t.comment(`4 connections: ${four.total.toFixed(1)} Mbit/s (aggregate cap 100), each ${four.perConn.map((x) => x.toFixed(1)).join(', ')}`);
    t.equal(four.perConn.length, 4);
    t.ok(four.total > 60 && four.total < 125, `4 connections get about the 100 Mbit/s aggregate (${four.total.toFixed(1)})`);
    t.ok(four.total > 1.5 * one.total, 'more connections get more than one');
    t.ok(Math.max(...four.perConn) < 52, 'no connection exceeds its cap');
  });

  await t.test('an end of stream travels after the data, both ways, and the connection closes', async (t) => {
    const r = await emu.addRoute({ listenHost: '127.0.12.1', targetHost: '127.0.22.1', targetPort: echoPort, fwdLink: 1, revLink: 2 });
    const s = track(await connect('127.0.12.1', r.port));
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString()));
    const ended = new Promise<void>((resolve) => s.once('end', () => resolve()));
    const t0 = performance.now();
    s.end('last words'); // the echo server's pipe() ends its side when ours ends
    await ended;
    t.equal(got, 'last words', 'all data arrived before the end');
    t.ok(performance.now() - t0 >= 45, 'the end of stream was delayed like data');
    await new Promise<void>((resolve) => (s.destroyed ? resolve() : s.once('close', () => resolve())));
    await waitOpen(r.id, 0);
    t.pass('the emulator closed the connection');
  });

  /** Waits until route `id` has `n` open connections. */
  async function waitOpen(id: number, n: number): Promise<void> {
    for (let i = 0; i < 250; i++) {
      if ((await emu.stats()).routes[String(id)]?.open === n) return;
      await sleep(20);
    }
    throw new Error(`route ${id} still has connections open`);
  }

  await t.test('a cut resets the connections of a route', async (t) => {
    const r = await emu.addRoute({ listenHost: '127.0.12.1', targetHost: '127.0.22.1', targetPort: echoPort, fwdLink: 3, revLink: 3 });
    const s = track(await connect('127.0.12.1', r.port));
    await new Promise<void>((resolve) => {
      s.once('data', () => resolve());
      s.write('hello');
    });
    const closed = new Promise<boolean>((resolve) => s.once('close', (hadError) => resolve(hadError)));
    await emu.cut(r.id);
    t.equal(await closed, true, 'the client sees a reset');
  });

  await t.test('it stops cleanly', async (t) => {
    const r = await emu.addRoute({ listenHost: '127.0.12.1', targetHost: '127.0.22.1', targetPort: echoPort, fwdLink: 3, revLink: 3 });
    const s = track(await connect('127.0.12.1', r.port));
    const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
    const stats = await emu.stats();
    t.ok(stats.open >= 1, 'a connection is open before the stop');
    t.equal(await emu.close(), 0, 'exit code 0');
    await closed;
    t.pass('open connections are closed');
    await t.rejects(connect('127.0.12.1', r.port), { code: 'ECONNREFUSED' }, 'the listener is gone');
  });
});
