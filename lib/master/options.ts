// The options of `new Master(...)` and `tccl master` (lib/cli/master.ts maps its flags onto them).
import type { LogFormat, LogLevel } from '../log';

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
  /** How long a vote (updateTopology) waits for every member, ms (default 60000). */
  voteTimeoutMs?: number;
  /** How long a new connection may take to authenticate, ms (default 5000). */
  handshakeTimeoutMs?: number;
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
