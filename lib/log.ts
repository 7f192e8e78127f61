/**
 * Structured logs a person can follow: one logfmt-style line per event on stderr, e.g.
 *
 *   2025-01-01T12:00:00.000Z INFO  master: peer dropped peer=p3 group=0 reason="no heartbeat for 3000 ms" epoch=7
 *
 * or, with the `json` format, one JSON object per line with the same fields, for machines (`jq`, log shippers):
 *
 *   {"time":"2025-01-01T12:00:00.000Z","level":"warn","component":"master","msg":"peer dropped","peer":"p3",...}
 *
 * The level comes from an option or the TCCL_LOG_LEVEL environment variable (error, warn, info, debug; default
 * warn for peers and info for the master, `silent` turns logging off); the format from an option or
 * TCCL_LOG_FORMAT (`text`, the default, or `json`).
 */
export type LogLevel = 'silent' | 'error' | 'warn' | 'info' | 'debug';

export type LogFormat = 'text' | 'json';
const FORMATS: readonly LogFormat[] = ['text', 'json'];

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

/** Parses a format name; unknown names throw a TypeError that lists the valid ones. */
export function parseLogFormat(v: unknown, what = 'logFormat'): LogFormat {
  if (typeof v === 'string' && FORMATS.includes(v.toLowerCase() as LogFormat)) return v.toLowerCase() as LogFormat;
  throw new TypeError(`Expected "${what}" to be one of ${FORMATS.join(', ')}, got ${JSON.stringify(v)}`);
}

/** A field value as JSON carries it: errors by their message, bigints as strings, the rest as is. */
function jsonValue(v: unknown): unknown {
  if (v instanceof Error) return v.message;
  if (typeof v === 'bigint') return v.toString();
  return v;
}

export class Logger {
  readonly level: LogLevel;
  readonly format: LogFormat;
  private readonly rank: number;

  /**
   * @param component Short name printed on every line (`master`, `peer p3`).
   * @param level Explicit level; otherwise TCCL_LOG_LEVEL; otherwise `fallback`.
   * @param format Explicit format; otherwise TCCL_LOG_FORMAT; otherwise `text`.
   */
  constructor(
    readonly component: string,
    level?: LogLevel | string,
    fallback: LogLevel = 'warn',
    private readonly sink: LogSink = (line) => process.stderr.write(line + '\n'),
    format?: LogFormat | string,
  ) {
    const env = process.env.TCCL_LOG_LEVEL;
    this.level = level !== undefined ? parseLogLevel(level) : env ? parseLogLevel(env, 'TCCL_LOG_LEVEL') : fallback;
    this.rank = RANK[this.level];
    const envFormat = process.env.TCCL_LOG_FORMAT;
    this.format = format !== undefined ? parseLogFormat(format) : envFormat ? parseLogFormat(envFormat, 'TCCL_LOG_FORMAT') : 'text';
  }

  /** A logger for a sub-component with the same level, format and sink. */
  child(component: string): Logger {
    return new Logger(component, this.level, this.level, this.sink, this.format);
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
    if (this.format === 'json') {
      const record: Record<string, unknown> = { time: new Date().toISOString(), level, component: this.component, msg };
      // The fixed keys come first and are not overwritten by a field of the same name.
      for (const [k, v] of Object.entries(fields ?? {})) if (v !== undefined && !(k in record)) record[k] = jsonValue(v);
      this.sink(JSON.stringify(record, (_k, v) => jsonValue(v)));
      return;
    }
    let line = `${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${this.component}: ${msg}`;
    if (fields) {
      for (const [k, v] of Object.entries(fields)) if (v !== undefined) line += ` ${k}=${formatValue(v)}`;
    }
    this.sink(line);
  }
}
