// Review of issue 21: a connection the master refuses before it authenticates (a bad frame, a failed proof) used
// to leave the unauthenticated cap at once while its socket lingered up to 2 s for a reader that never reads: a
// stranger could hold far more descriptors than the cap. Refused connections now stay counted until their socket
// closes and are the first evicted (with an RST); refusal log lines are rate-limited.
import t from 'tap';
import * as net from 'node:net';
import { Logger } from '../../lib/log';
import { HandshakeGate } from '../../lib/master/gate';
import { Master } from '../../lib/master/master';
import { encodeFrame } from '../../lib/protocol';
import { RawClient } from './raw-client';

const CAP = 16;
const STRANGERS = 300;

t.test('strangers refused for a bad frame never hold more sockets than the cap', { timeout: 120_000 }, async (t) => {
  const master = new Master({ logLevel: 'silent', token: 'refusals-token', maxUnauthenticated: CAP, heartbeatIntervalMs: 200, peerTimeoutMs: 2000 });
  const port = await master.listen();
  const server = (master as unknown as { server: net.Server }).server;
  const clients: net.Socket[] = [];
  t.teardown(async () => {
    for (const c of clients) c.destroy();
    await master.close();
  });
  let peak = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      peak = Math.max(peak, await new Promise<number>((resolve) => server.getConnections((_e, n) => resolve(n))));
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  const bad = encodeFrame({ t: 'nonsense' });
  for (let i = 0; i < STRANGERS; i++) {
    // Half-open and paused: it never reads the refusal and never closes its side.
    const c = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    c.on('error', () => undefined);
    c.pause();
    clients.push(c);
    await new Promise<void>((resolve) => c.once('connect', () => c.write(bad, () => resolve())).once('error', () => resolve()));
  }
  await new Promise((r) => setTimeout(r, 300));
  sampling = false;
  await sampler;
  t.ok(peak <= CAP + 4, `the master held at most ${peak} sockets of ${STRANGERS} refused strangers (cap ${CAP})`);

  // An honest peer with the wrong token still reads why it was refused.
  const c = new RawClient(port);
  t.teardown(() => c.conn.close());
  const masterNonce = await c.hello();
  t.match(await c.keyExchange('not-the-token', masterNonce), { t: 'error', code: 'AUTH', message: /authentication failed/ });
});

t.test('refusal log lines are rate-limited, with a count', async (t) => {
  const lines: string[] = [];
  const gate = new HandshakeGate(64, new Logger('master', 'info', 'info', (l) => lines.push(l)), 4096);
  for (let i = 0; i < 1000; i++) gate.logRefusal('rejected peer: authentication failed', { from: `127.0.0.1:${i}` });
  t.equal(lines.length, 1, `one line for 1000 refusals within the interval (${lines.length})`);
  t.match(lines[0], /rejected peer: authentication failed/);
});
