/**
 * Argument checks shared by every user-facing class: each throws an {@link InvalidArgumentError} (a TypeError
 * with code `INVALID_ARGUMENT`) whose message names the argument, what it was and what is expected, e.g.
 * `Option "port" must be an integer from 0 to 65535, got -1`. `subject` overrides how the argument is named
 * (e.g. `"device"` for a positional argument).
 */
import { InvalidArgumentError } from './errors';

/** A short description of a value for an error message. */
export function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean') return String(v);
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? `${v.slice(0, 60)}...` : v);
  if (ArrayBuffer.isView(v)) return `${v.constructor.name}(${(v as unknown as { length?: number }).length ?? v.byteLength})`;
  if (Array.isArray(v)) return `an array of length ${v.length}`;
  return typeof v === 'object' ? `an object (${(v as object).constructor?.name ?? 'Object'})` : typeof v;
}

const optionNamed = (name: string) => `Option "${name}"`;

/** An integer in [min, max]. */
export function checkInt(name: string, v: unknown, min: number, max = Number.MAX_SAFE_INTEGER, subject = optionNamed(name)): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`;
    throw new InvalidArgumentError(`${subject} must be an integer ${range}, got ${describeValue(v)}`);
  }
  return v;
}

/** A finite number in [min, max] (or (min, max] when `minExclusive`). */
export function checkNumber(name: string, v: unknown, min: number, max: number, minExclusive = false, subject = optionNamed(name)): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || (minExclusive ? v <= min : v < min) || v > max) {
    throw new InvalidArgumentError(`${subject} must be a finite number ${minExclusive ? '>' : '>='} ${min} and <= ${max}, got ${describeValue(v)}`);
  }
  return v;
}

/** One of a list of strings. */
export function checkOneOf<T extends string>(name: string, v: unknown, allowed: readonly T[], subject = optionNamed(name)): T {
  if (typeof v !== 'string' || !allowed.includes(v as T)) {
    throw new InvalidArgumentError(`${subject} must be one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}, got ${describeValue(v)}`);
  }
  return v as T;
}

/** A non-empty string. */
export function checkString(name: string, v: unknown, subject = optionNamed(name)): string {
  if (typeof v !== 'string' || v.length === 0) throw new InvalidArgumentError(`${subject} must be a non-empty string, got ${describeValue(v)}`);
  return v;
}

/** Rejects unknown keys so a misspelt option is an error, not a silent default. */
export function checkKeys(what: string, obj: object, allowed: readonly string[]): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k)) throw new InvalidArgumentError(`Unknown ${what} option "${k}"; expected one of ${allowed.join(', ')}`);
  }
}

/**
 * Parses `host:port`, with IPv6 hosts in brackets (`[::1]:29500`); `what` names the argument in the error.
 *
 * @example
 * ```ts
 * parseHostPort('10.0.0.2:29500'); // { host: '10.0.0.2', port: 29500 }
 * ```
 */
export function parseHostPort(address: unknown, what = 'the address'): { host: string; port: number } {
  const m = typeof address === 'string' ? /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(address) : null;
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 1 || port > 65535) {
    throw new InvalidArgumentError(`Expected ${what} as "host:port" (e.g. "10.0.0.2:29500", "[::1]:29500"), got ${describeValue(address)}`);
  }
  return { host: m[1] ?? m[2], port };
}

/** `host:port` for display and dialling, with IPv6 hosts in brackets. */
export function formatHostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/**
 * A list of masters: `'a:48148,b:48148'`, or an array of `host:port` strings. A peer that loses its master tries
 * them in turn (docs/master.md, "Restart and fail-over").
 *
 * @example
 * ```ts
 * parseMasterList('10.0.0.1:48148,10.0.0.2:48148'); // [{ host: '10.0.0.1', port: 48148 }, { host: '10.0.0.2', port: 48148 }]
 * ```
 */
export function parseMasterList(masters: unknown, what = 'the "master" option'): { host: string; port: number }[] {
  const list = typeof masters === 'string' ? masters.split(',').map((x) => x.trim()) : masters;
  if (!Array.isArray(list) || list.length === 0 || list.length > 64) {
    throw new InvalidArgumentError(`Expected ${what} as "host:port", a comma-separated list of them, or an array of them (at most 64), got ${describeValue(masters)}`);
  }
  return list.map((a, i) => parseHostPort(a, list.length > 1 ? `entry ${i + 1} of ${what}` : what));
}

/** Whether `host` is a loopback address or name (127.0.0.0/8, ::1, localhost): only this machine reaches it. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  if (h === 'localhost' || h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  const v4 = h.startsWith('::ffff:') ? h.slice(7) : h;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4);
}

/** An address to dial a listener bound to `host`: a wildcard (0.0.0.0, ::) is dialled on loopback. */
export function dialableHost(host: string): string {
  return host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
}
