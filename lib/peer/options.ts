/** The options of Communicator.connect (communicator.ts). */
import type { LogFormat, LogLevel } from '../log';

export interface CommunicatorOptions {
  /**
   * The master, `host:port` (`[v6]:port` for IPv6), or several: `'a:48148,b:48148'` or an array. A peer that loses
   * its master tries them in turn for `reconnectTimeoutMs` (a restarted master, or etcd standbys: docs/master.md).
   */
  master: string | string[];
  /** Peer group (one ring per group; default 0). */
  peerGroup?: number;
  /** Run token, when the master requires one. */
  token?: string;
  /** TCP connections per data-plane link (default 8). */
  connections?: number;
  /** Address the other peers dial for this peer's data plane (default: the address the master sees). */
  advertiseAddress?: string;
  /** Address the data-plane listener binds (default '0.0.0.0'). */
  listenHost?: string;
  /** Data-plane port (default 0: chosen by the OS). */
  dataPort?: number;
  /** Local address the data plane's outgoing connections are sent from (default: the OS picks by route). */
  sourceAddress?: string;
  /** How long connect() waits to be accepted, ms (default 300000; 0 = forever). */
  timeoutMs?: number;
  /**
   * After losing the master, how long to keep trying to reconnect, ms (default 60000: long enough for a supervisor
   * to restart it). Operations keep waiting meanwhile; a master that restarted rebuilds the group from its peers.
   */
  reconnectTimeoutMs?: number;
  /** Name shown in the master's logs. */
  label?: string;
  /** Log level (default TCCL_LOG_LEVEL or 'warn'). */
  logLevel?: LogLevel;
  /** Log format: 'text' lines or one 'json' object per line (default TCCL_LOG_FORMAT or 'text'). */
  logFormat?: LogFormat;
  /**
   * 'auto': the library votes waiting peers in at an operation boundary the master announces (when every member
   * is 'auto'); 'manual' (default; init()'s default is 'auto'): only updateTopology() admits them.
   */
  admission?: 'auto' | 'manual';
  /** connect() resolves only once the group has this many members (see waitForPeers; default 1). */
  worldSize?: number;
  /** Warn when this peer has run alone this long while peers wait to join, ms (default 10000; 0 = never). */
  warnAloneMs?: number;
}
