/**
 * The master's HTTP port: Prometheus `/metrics`, `/status` (JSON), `/events?after=N` (JSON) and the live
 * dashboard (`/`, static files from ./dashboard, no build step, nothing fetched from elsewhere). It binds to
 * localhost unless told otherwise. When the run has a token every request must carry it, or the read-only metrics
 * token (everything here is read-only; give Prometheus the metrics token, never the run's): `Authorization: Bearer
 * <token>` (Prometheus' `bearer_token_file`, curl), or once `/?token=<token>` in a browser, which sets a cookie
 * derived from the token (the token itself is never stored) and redirects to `/`. Slow or idle clients are cut off
 * (header and request deadlines, a connection cap), so a stranger cannot hold the port.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import * as path from 'node:path';
import type { Registry } from 'prom-client';
import type { Logger } from '../log';
import { MasterView, statusOf } from './status';

export interface HttpOptions {
  host: string;
  port: number;
  token?: string;
  /** Read-only token accepted in place of `token`. */
  metricsToken?: string;
  view: MasterView;
  registry: Registry;
  log: Logger;
}

/** A running HTTP endpoint. */
export interface HttpEndpoint {
  readonly port: number;
  close(): Promise<void>;
}

const ASSETS: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
};
const COOKIE = 'tccl_auth';
/** How often the throughput chart gets a point, ms. */
const SAMPLE_MS = 1000;
/** Events one /events answer holds at most. */
const MAX_EVENTS = 500;
/** A client must send its request headers within this long, and the whole request within REQUEST_TIMEOUT_MS. */
export const HEADERS_TIMEOUT_MS = 10_000;
export const REQUEST_TIMEOUT_MS = 30_000;
/** Open HTTP connections at most (a dashboard holds one or two, Prometheus one); see the eviction below. */
export const MAX_HTTP_CONNECTIONS = 64;
/** How often Node enforces the header and request timeouts on open connections (ms). */
const CONNECTIONS_CHECK_MS = 1000;

/** The cookie value for a token: proves the browser was given the token without holding it. */
function cookieValue(token: string): string {
  return createHmac('sha256', token).update('tccl-dashboard-v1').digest('hex');
}

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function cookie(req: http.IncomingMessage, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === name) return v.join('=');
  }
  return undefined;
}

/** Starts the endpoint; rejects when the port cannot be bound (e.g. EADDRINUSE). */
export async function startHttp(options: HttpOptions): Promise<HttpEndpoint> {
  const { view, token, metricsToken, log } = options;
  const dir = path.join(__dirname, 'dashboard');
  const assets = new Map<string, Buffer>();
  for (const a of Object.values(ASSETS)) assets.set(a.file, await fsp.readFile(path.join(dir, a.file)));
  const tokens = [token, metricsToken].filter((x): x is string => x !== undefined);
  const cookies = tokens.map(cookieValue);
  const matches = (v: string, list: string[]) => list.some((x) => same(v, x));

  /** The token the request proves (its cookie value), '' when none is needed, undefined when refused. */
  const authorized = (req: http.IncomingMessage, url: URL): string | undefined => {
    if (tokens.length === 0) return '';
    const auth = req.headers.authorization;
    const bearer = auth?.startsWith('Bearer ') ? auth.slice(7).trim() : undefined;
    const q = url.searchParams.get('token');
    for (const x of tokens) if ((bearer !== undefined && same(bearer, x)) || (q !== null && same(q, x))) return cookieValue(x);
    const c = cookie(req, COOKIE);
    return c !== undefined && matches(c, cookies) ? c : undefined;
  };

  const send = (res: http.ServerResponse, status: number, type: string, body: string | Buffer, extra: http.OutgoingHttpHeaders = {}) => {
    res.writeHead(status, {
      'content-type': type,
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      // The page loads only its own files and talks only to this server.
      'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:",
      ...extra,
    });
    res.end(body);
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return send(res, 405, 'text/plain', `${req.method} is not supported here: use GET\n`, { allow: 'GET, HEAD' });
    }
    const proof = authorized(req, url);
    if (proof === undefined) {
      log.warn('refused an HTTP request without the run or metrics token', { from: req.socket.remoteAddress, path: url.pathname });
      return send(res, 401, 'text/plain; charset=utf-8',
        'This run requires its token or its metrics token: send "Authorization: Bearer <token>", or open /?token=<token> once in a browser.\n',
        { 'www-authenticate': 'Bearer realm="tccl"' });
    }
    if (tokens.length > 0 && url.searchParams.has('token')) {
      // Out of the address bar and history: the cookie carries the proof from now on.
      return send(res, 303, 'text/plain', 'see /\n', {
        location: url.pathname,
        'set-cookie': `${COOKIE}=${proof}; HttpOnly; SameSite=Strict; Path=/`,
      });
    }
    const asset = ASSETS[url.pathname];
    if (asset) return send(res, 200, asset.type, assets.get(asset.file)!);
    switch (url.pathname) {
      case '/metrics':
        return send(res, 200, options.registry.contentType, await options.registry.metrics());
      case '/status':
        return send(res, 200, 'application/json', JSON.stringify(statusOf(view)));
      case '/events': {
        const after = Number(url.searchParams.get('after') ?? 0);
        if (!Number.isSafeInteger(after) || after < 0) return send(res, 400, 'text/plain', 'Expected "after" to be a non-negative integer\n');
        return send(res, 200, 'application/json', JSON.stringify(view.events(after).slice(-MAX_EVENTS)));
      }
      default:
        return send(res, 404, 'text/plain', `Nothing at ${url.pathname}: try /, /metrics, /status or /events\n`);
    }
  };

  // Node checks the header and request timeouts only every connectionsCheckingInterval (30 s by default).
  const server = http.createServer({ connectionsCheckingInterval: CONNECTIONS_CHECK_MS }, (req, res) => {
    silent.delete(req.socket);
    handle(req, res).catch((err: Error) => {
      log.error('HTTP request failed', { path: req.url, err });
      if (!res.headersSent) send(res, 500, 'text/plain', `${err.message}\n`);
      else res.destroy();
    });
  });
  server.headersTimeout = HEADERS_TIMEOUT_MS;
  server.requestTimeout = REQUEST_TIMEOUT_MS;
  // At the cap a new connection evicts the oldest one that has not sent a request yet (a stranger's idle socket),
  // rather than being refused: idle sockets cannot lock /metrics out. Only when every connection is busy with a
  // request is the new one refused.
  const open = new Set<Socket>();
  const silent = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    if (open.size >= MAX_HTTP_CONNECTIONS) {
      const oldest = silent.values().next().value as Socket | undefined;
      if (!oldest) return socket.destroy();
      silent.delete(oldest);
      open.delete(oldest);
      oldest.resetAndDestroy();
    }
    open.add(socket);
    silent.add(socket);
    // Our own deadline for the first request: Node's headersTimeout is not enforced on a connection that has
    // sent nothing, nor (Node 20) on any other while such a connection is open.
    const timer = setTimeout(() => { if (silent.has(socket)) socket.resetAndDestroy(); }, HEADERS_TIMEOUT_MS);
    timer.unref();
    socket.once('close', () => {
      clearTimeout(timer);
      open.delete(socket);
      silent.delete(socket);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => log.error('HTTP listener error', { err }));
  const sampler = setInterval(() => view.telemetry.sample(view.groupsInfo()), SAMPLE_MS);
  sampler.unref();
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    close: async () => {
      clearInterval(sampler);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
