// The options of `new Master(...)` and `tccl master` (lib/cli/master.ts maps its flags onto them).
import { InvalidArgumentError } from '../errors';
import type { LogFormat, LogLevel } from '../log';
import { DEFAULT_MAX_FRAME_BYTES } from '../protocol';
import { checkInt, checkString, isLoopbackHost } from '../validate';

export interface MasterOptions {
  /** Address to listen on (default '127.0.0.1'; use '0.0.0.0' to accept remote peers). */
  host?: string;
  /** Port (default 0: chosen by the OS; read it from `listen()` or `port`). */
  port?: number;
  /**
   * Run token: peers must prove they know it. Required to listen on an address other than loopback, unless
   * `insecure` is set. Default: no authentication.
   */
  token?: string;
  /**
   * Listen on a non-loopback address without a run token: anyone who reaches the port can join, vote, evict
   * members and read the run's status. The master warns at start, in `/status` and on the dashboard. Default false.
   */
  insecure?: boolean;
  /**
   * A read-only token for `/metrics`, `/status`, `/events` and the dashboard (give it to Prometheus instead of the
   * run token). It can do nothing else: it does not admit a peer, a vote or a `tccl check`. Must differ from `token`.
   */
  metricsToken?: string;
  /** Heartbeat period both ways, ms (default 500). */
  heartbeatIntervalMs?: number;
  /** A peer silent for this long is dropped, ms (default 3000). Peers use the same value for the master. */
  peerTimeoutMs?: number;
  /**
   * A peer whose JavaScript thread has been blocked this long is dropped as hung, ms (default 300000). Until then
   * it stays a member: its heartbeats come from its control thread (docs/master.md, "Liveness").
   */
  jsHangTimeoutMs?: number;
  /** How long a vote (updateTopology) waits for every member, ms (default 60000). */
  voteTimeoutMs?: number;
  /** How long a new connection may take to authenticate, ms (default 5000). */
  handshakeTimeoutMs?: number;
  /**
   * Connections that have not authenticated yet, at most (default 1024; at least 2 x the listen backlog of 511). A new one past the cap closes the oldest
   * of them (those that have not even said hello first), so a flood of strangers cannot lock a peer out.
   */
  maxUnauthenticated?: number;
  /** Largest control frame accepted, bytes (default 1 MiB). */
  maxFrameBytes?: number;
  /** Log level (default TCCL_LOG_LEVEL or 'info'). */
  logLevel?: LogLevel;
  /** Log format: 'text' lines or one 'json' object per line (default TCCL_LOG_FORMAT or 'text'). */
  logFormat?: LogFormat;
  /**
   * Serve Prometheus `/metrics`, `/status` and the live dashboard on this port (0: chosen by the OS; read it from
   * `httpPort`). Default: no HTTP. When the run has a token, every HTTP request must carry it (docs/operations.md).
   */
  httpPort?: number;
  /** Address the HTTP port binds (default '127.0.0.1': only this host). */
  httpHost?: string;
  /** After a restart: how long a group's rebuild waits for its members to resume, ms (default 5000; docs/master.md). */
  resumeWindowMs?: number;
}

/** Said at start, in /status and on the dashboard when listening off loopback without a token. */
export const INSECURE_WARNING = 'INSECURE: no run token on a non-loopback address: anyone who reaches this master can join the run, evict members and read its state (give --token-file)';

/** The options checked, with their defaults. */
export interface ResolvedMasterOptions {
  host: string;
  port: number;
  token?: string;
  metricsToken?: string;
  /** Listening off loopback without a token (allowed only with `insecure: true`). */
  insecure: boolean;
  heartbeatIntervalMs: number;
  peerTimeoutMs: number;
  voteTimeoutMs: number;
  handshakeTimeoutMs: number;
  maxUnauthenticated: number;
  maxFrameBytes: number;
  http?: { host: string; port: number };
  resumeWindowMs: number;
  jsHangTimeoutMs: number;
}

/** Checks `new Master(options)`; throws a TypeError naming the option, or refusing an exposed tokenless master. */
export function resolveOptions(options: MasterOptions): ResolvedMasterOptions {
  const host = checkString('host', options.host ?? '127.0.0.1');
  if (options.token !== undefined) checkString('token', options.token);
  if (options.metricsToken !== undefined) checkString('metricsToken', options.metricsToken);
  if (options.metricsToken !== undefined && options.metricsToken === options.token) {
    throw new InvalidArgumentError('Expected "metricsToken" to differ from the run token: the metrics token is given to monitoring, which must not hold the credential of the run');
  }
  const http = options.httpPort === undefined ? undefined
    : { port: checkInt('httpPort', options.httpPort, 0, 65535), host: checkString('httpHost', options.httpHost ?? '127.0.0.1') };
  const exposed = [host, ...(http && options.metricsToken === undefined ? [http.host] : [])].filter((h) => !isLoopbackHost(h));
  const insecure = options.token === undefined && exposed.length > 0;
  if (insecure && options.insecure !== true) {
    throw new InvalidArgumentError(
      `Refusing to listen on ${exposed.join(' and ')} without a run token: anyone who reaches the port could join the run, evict its members and read its state. ` +
      'Give a token (tccl master --token-file FILE, or new Master({ token })), listen on 127.0.0.1, or accept the risk explicitly with --insecure ({ insecure: true }).',
    );
  }
  const heartbeatIntervalMs = checkInt('heartbeatIntervalMs', options.heartbeatIntervalMs ?? 500, 10, 3_600_000);
  const peerTimeoutMs = checkInt('peerTimeoutMs', options.peerTimeoutMs ?? 3000, 50, 3_600_000);
  if (peerTimeoutMs < 2 * heartbeatIntervalMs) {
    throw new TypeError(`Expected "peerTimeoutMs" (${peerTimeoutMs}) to be at least twice "heartbeatIntervalMs" (${heartbeatIntervalMs})`);
  }
  return {
    host, port: checkInt('port', options.port ?? 0, 0, 65535), token: options.token, metricsToken: options.metricsToken, insecure,
    heartbeatIntervalMs, peerTimeoutMs,
    voteTimeoutMs: checkInt('voteTimeoutMs', options.voteTimeoutMs ?? 60_000, 1, 2 ** 31 - 1),
    handshakeTimeoutMs: checkInt('handshakeTimeoutMs', options.handshakeTimeoutMs ?? 5000, 1, 600_000),
    maxUnauthenticated: checkInt('maxUnauthenticated', options.maxUnauthenticated ?? 1024, 1, 1 << 20),
    maxFrameBytes: checkInt('maxFrameBytes', options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES, 1024, 1 << 30),
    http,
    resumeWindowMs: checkInt('resumeWindowMs', options.resumeWindowMs ?? 5000, 0, 600_000),
    jsHangTimeoutMs: checkInt('jsHangTimeoutMs', options.jsHangTimeoutMs ?? 300_000, 100, 2 ** 31 - 1),
  };
}
