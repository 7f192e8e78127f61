/**
 * Structured logs a person can follow: one logfmt-style line per event on stderr, e.g.
 *
 *   2025-01-01T12:00:00.000Z INFO  master: peer dropped peer=p3 group=0 reason="no heartbeat for 3000 ms" epoch=7
 *
 * The level comes from an option or the TCCL_LOG_LEVEL environment variable (error, warn, info, debug; default
 * warn for peers and info for the master, `silent` turns logging off).
 */
export type LogLevel = 'silent' | 'error' | 'warn' | 'info' | 'debug';

const RANK: Record<LogLevel, number> = { silent: 0, error: 1, warn: 2, info: 3, debug: 4 };

export type LogFields = Record<string, unknown>;

/** Where log lines go; tests may capture them. */
export type LogSink = (line: string) => void;

function formatValue(v: unknown): string {
  let s: string;
  if (v instanceof Error) s = v.message;
  else if (typeof v === 'string') s = v;
  else if (v === undefined) s = 'undefined';
  else if (typeof v === 'object' && v !== null) s = JSON.stringify(v);
  else s = String(v);
  return /^[A-Za-z0-9_.:@/+-]+$/.test(s) ? s : JSON.stringify(s);
}

/** Parses a level name; unknown names throw a TypeError that lists the valid ones. */
export function parseLogLevel(v: unknown, what = 'logLevel'): LogLevel {
  if (typeof v === 'string' && v.toLowerCase() in RANK) return v.toLowerCase() as LogLevel;
  throw new TypeError(`Expected "${what}" to be one of ${Object.keys(RANK).join(', ')}, got ${JSON.stringify(v)}`);
}

export class Logger {
  readonly level: LogLevel;
  private readonly rank: number;

  /**
   * @param component Short name printed on every line (`master`, `peer p3`).
   * @param level Explicit level; otherwise TCCL_LOG_LEVEL; otherwise `fallback`.
   */
  constructor(
    readonly component: string,
    level?: LogLevel | string,
    fallback: LogLevel = 'warn',
    private readonly sink: LogSink = (line) => process.stderr.write(line + '\n'),
  ) {
    const env = process.env.TCCL_LOG_LEVEL;
    this.level = level !== undefined ? parseLogLevel(level) : env ? parseLogLevel(env, 'TCCL_LOG_LEVEL') : fallback;
    this.rank = RANK[this.level];
  }

  /** A logger for a sub-component with the same level and sink. */
  child(component: string): Logger {
    return new Logger(component, this.level, this.level, this.sink);
  }

  enabled(level: Exclude<LogLevel, 'silent'>): boolean {
    return RANK[level] <= this.rank;
  }

  error(msg: string, fields?: LogFields): void { this.write('error', msg, fields); }
  warn(msg: string, fields?: LogFields): void { this.write('warn', msg, fields); }
  info(msg: string, fields?: LogFields): void { this.write('info', msg, fields); }
  debug(msg: string, fields?: LogFields): void { this.write('debug', msg, fields); }

  private write(level: Exclude<LogLevel, 'silent'>, msg: string, fields?: LogFields): void {
    if (RANK[level] > this.rank) return;
    let line = `${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${this.component}: ${msg}`;
    if (fields) {
      for (const [k, v] of Object.entries(fields)) if (v !== undefined) line += ` ${k}=${formatValue(v)}`;
    }
    this.sink(line);
  }
}
