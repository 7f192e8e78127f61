// Issue 21, the master's doors: a tokenless master refuses a non-loopback address unless told --insecure (and
// then says so everywhere); a stranger without the token cannot join, vote, `check` or read /status or /metrics;
// the read-only metrics token reads them and can do nothing else; a tokenless master probes only the checker's
// own address; the HTTP port closes connections over its cap.
import t, { Test } from 'tap';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { main } from '../../lib/cli';
import { AuthError } from '../../lib/errors';
import { INSECURE_WARNING, Master } from '../../lib/master/master';
import { MAX_HTTP_CONNECTIONS } from '../../lib/master/http';
import { Communicator } from '../../lib/peer/communicator';
import { RawClient } from './raw-client';
import { waitFor } from '../harness/process';

const TOKEN = 'the-run-token-of-this-test';
const METRICS = 'a-read-only-metrics-token';

async function startMaster(t: Test, opts: ConstructorParameters<typeof Master>[0] = {}): Promise<Master> {
  const master = new Master({ logLevel: 'silent', heartbeatIntervalMs: 200, peerTimeoutMs: 2000, ...opts });
  await master.listen();
  t.teardown(() => master.close());
  return master;
}

async function get(port: number, p: string, bearer?: string): Promise<{ status: number; body: string; cookie?: string }> {
  const r = await fetch(`http://127.0.0.1:${port}${p}`, { headers: bearer ? { authorization: `Bearer ${bearer}` } : {}, redirect: 'manual' });
  return { status: r.status, body: await r.text(), cookie: r.headers.get('set-cookie') ?? undefined };
}

t.test('a tokenless master refuses a non-loopback address unless told --insecure, and then warns everywhere', async (t) => {
  t.throws(() => new Master({ host: '0.0.0.0', logLevel: 'silent' }), /Refusing to listen on 0\.0\.0\.0 without a run token.*--token-file.*insecure: true/s);
  t.throws(() => new Master({ host: '127.0.0.1', httpPort: 0, httpHost: '0.0.0.0', logLevel: 'silent' }), /Refusing to listen on 0\.0\.0\.0/,
    'the HTTP port too (it shows the whole run)');
  t.doesNotThrow(() => new Master({ host: '0.0.0.0', token: TOKEN, logLevel: 'silent' }), 'with a token');
  t.doesNotThrow(() => new Master({ host: '127.0.0.5', logLevel: 'silent' }), 'loopback keeps working without a flag');
  t.doesNotThrow(() => new Master({ host: '::1', logLevel: 'silent' }), 'IPv6 loopback too');

  const master = await startMaster(t, { host: '0.0.0.0', insecure: true, httpPort: 0 });
  t.ok(master.insecure);
  const s = JSON.parse((await get(master.httpPort!, '/status')).body);
  t.same(s.master.warnings, [INSECURE_WARNING], '/status carries the warning');
  t.match((await get(master.httpPort!, '/')).body, /id="warnings"/, 'the dashboard has a place for it (app.js fills it from /status)');
  t.match(fs.readFileSync(path.join(__dirname, '../../lib/master/dashboard/app.js'), 'utf8'), /s\.master\.warnings/);

  const safe = await startMaster(t, { host: '127.0.0.1', httpPort: 0 });
  t.same(JSON.parse((await get(safe.httpPort!, '/status')).body).master.warnings, [], 'no warning on loopback');
});

t.test('tccl master: refuses 0.0.0.0 without a token (exit 2, says what to do); --insecure is accepted', async (t) => {
  const saved = process.env.TCCL_TOKEN;
  delete process.env.TCCL_TOKEN;
  t.teardown(() => { if (saved !== undefined) process.env.TCCL_TOKEN = saved; });
  const err: string[] = [];
  const io = { out: () => undefined, err: (x: string) => err.push(x) };
  t.equal(await main(['master', '--port', '0'], io), 2);
  t.match(err.join(''), /error: refusing to listen on 0\.0\.0\.0 without a run token.*--token-file FILE.*--insecure/s);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tccl-auth-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'run.token'), TOKEN);
  err.length = 0;
  t.equal(await main(['master', '--port', '0', '--token-file', path.join(dir, 'run.token'), '--metrics-token-file', path.join(dir, 'run.token')], io), 2);
  t.match(err.join(''), /the metrics token is the run token/);
  const help: string[] = [];
  await main(['master', '--help'], { out: (x) => help.push(x), err: (x) => help.push(x) });
  t.match(help.join(''), /--insecure/);
  t.match(help.join(''), /--metrics-token-file <file>/);
});

t.test('a stranger without the token cannot join, vote, check, or read /status and /metrics', async (t) => {
  const master = await startMaster(t, { token: TOKEN, metricsToken: METRICS, httpPort: 0 });
  const a = await Communicator.connect({ master: master.address, token: TOKEN, logLevel: 'silent', listenHost: '127.0.0.1', connections: 1 });
  t.teardown(() => a.close());

  // join: no proof, a wrong one
  for (const proof of [undefined, 'nope']) {
    const c = new RawClient(master.port);
    const mn = await c.hello();
    if (proof === undefined) c.send({ t: 'register', peerGroup: 0, dataPort: 9 });
    const answer = proof === undefined ? await c.next('welcome') : await c.keyExchange(proof, mn);
    t.match(answer, { t: 'error', code: 'AUTH' }, `join refused (${proof ?? 'no proof'})`);
    await c.closed;
  }
  await t.rejects(Communicator.connect({ master: master.address, logLevel: 'silent', listenHost: '127.0.0.1' }), AuthError);

  // vote (or any peer message) before authenticating: a protocol error, and the connection is closed
  for (const first of [true, false]) {
    const c = new RawClient(master.port);
    if (first) await c.connected();
    else await c.hello();
    c.send({ t: 'vote', id: 1 });
    t.match(await c.next('voteResult'), { t: 'error', code: 'PROTOCOL' }, `a vote ${first ? 'as the first frame' : 'after hello'} is refused`);
    await c.closed;
  }

  // check without the token
  const c = new RawClient(master.port);
  await c.hello();
  c.send({ t: 'check', peerGroup: 0, port: 9, nonce: Buffer.alloc(16), probeBytes: 64 << 20 });
  t.match(await c.next('checkResult'), { t: 'error', code: 'AUTH' }, 'check without the key exchange refused');
  const c2 = new RawClient(master.port);
  t.match(await c2.keyExchange('wrong', await c2.hello()), { t: 'error', code: 'AUTH' }, 'check with a wrong token refused');

  // HTTP
  for (const p of ['/status', '/metrics', '/events', '/']) {
    t.equal((await get(master.httpPort!, p)).status, 401, `${p} without a token`);
    t.equal((await get(master.httpPort!, p, 'wrong')).status, 401, `${p} with a wrong token`);
  }
  t.equal(a.worldSize, 1, 'the run is undisturbed');
  t.same(master.groupsInfo()[0].members.length, 1);
});

t.test('the metrics token reads /metrics and /status, and can do nothing else', async (t) => {
  t.throws(() => new Master({ token: TOKEN, metricsToken: TOKEN }), /"metricsToken" to differ from the run token/);
  const master = await startMaster(t, { token: TOKEN, metricsToken: METRICS, httpPort: 0 });
  for (const tok of [METRICS, TOKEN]) {
    t.equal((await get(master.httpPort!, '/metrics', tok)).status, 200, `/metrics with the ${tok === METRICS ? 'metrics' : 'run'} token`);
    t.equal((await get(master.httpPort!, '/status', tok)).status, 200, `/status with the ${tok === METRICS ? 'metrics' : 'run'} token`);
  }
  const login = await get(master.httpPort!, `/?token=${METRICS}`);
  t.equal(login.status, 303, 'the browser login works with the metrics token');
  const cookie = login.cookie!.split(';')[0];
  const r = await fetch(`http://127.0.0.1:${master.httpPort}/status`, { headers: { cookie } });
  t.equal(r.status, 200, 'and its cookie reads /status');

  await t.rejects(Communicator.connect({ master: master.address, token: METRICS, logLevel: 'silent', listenHost: '127.0.0.1' }),
    AuthError, 'it cannot join the run');
  const c = new RawClient(master.port);
  t.match(await c.keyExchange(METRICS, await c.hello()), { t: 'error', code: 'AUTH' }, 'it cannot run a check');
  t.same(master.groupsInfo(), [], 'nobody joined');
});

t.test('a master without a token probes only the address a check comes from', async (t) => {
  const master = await startMaster(t);
  const a = await Communicator.connect({ master: master.address, logLevel: 'silent', listenHost: '127.0.0.1', connections: 1 });
  t.teardown(() => a.close());
  const victim = net.createServer((s) => { s.destroy(); t.fail('a member dialled the third party'); });
  await new Promise<void>((r) => victim.listen(0, '127.0.0.77', r));
  t.teardown(() => victim.close());
  const c = new RawClient(master.port);
  await c.hello();
  c.send({ t: 'check', peerGroup: 0, port: (victim.address() as net.AddressInfo).port, advertiseAddress: '127.0.0.77', nonce: Buffer.alloc(16), probeBytes: 64 << 20 });
  t.match(await c.next('checkResult'), { t: 'error', code: 'CHECK_REFUSED', message: /probes only the address it comes from \(127\.0\.0\.1\)/ });
  await new Promise((r) => setTimeout(r, 500));
});

t.test('the HTTP port: idle connections at its cap cannot lock out a request', async (t) => {
  const master = await startMaster(t, { httpPort: 0 });
  const idle: net.Socket[] = [];
  t.teardown(() => { for (const s of idle) s.destroy(); });
  const closed = new Set<net.Socket>();
  for (let i = 0; i < MAX_HTTP_CONNECTIONS; i++) {
    const s = net.connect({ host: '127.0.0.1', port: master.httpPort! });
    s.on('error', () => undefined);
    s.once('close', () => closed.add(s));
    await new Promise((r) => s.once('connect', r));
    idle.push(s);
  }
  // A stranger holds the cap with sockets that never send a request: a scrape still gets through, at once (the
  // idle sockets are still open: nothing timed out), and the oldest idle socket made room for it.
  const r = await get(master.httpPort!, '/status');
  t.equal(r.status, 200, 'a request gets through while the idle connections are held');
  await waitFor(() => closed.has(idle[0]), 10_000, 'the oldest idle connection closed');
  t.ok(closed.size < MAX_HTTP_CONNECTIONS, `the others stay (${closed.size} closed)`);
  // A connection that never finishes its headers is closed by the header timeout (checked every second).
  const slow = net.connect({ host: '127.0.0.1', port: master.httpPort! });
  slow.on('error', () => undefined);
  idle.push(slow);
  slow.write('GET /status HTTP/1.1\r\nHost: x\r\n');
  await new Promise((resolve) => slow.once('close', resolve));
  t.pass('a half-sent request is closed by the header timeout');
});
