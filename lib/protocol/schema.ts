/**
 * Typed field schemas for control messages: each builder describes how a field is checked on arrival and
 * carries the field's TypeScript type, so that a message's type is derived from its schema ({@link MessageOf})
 * instead of being written a second time by hand.
 */
import { ProtocolError } from '../errors';

/** How a field is checked. */
export type FieldKind =
  | { kind: 'uint'; max: number; min: number }
  | { kind: 'string'; maxLength: number; values?: readonly string[] }
  | { kind: 'bytes'; length?: number }
  | { kind: 'bool' }
  | { kind: 'peers' }
  /** A structured value checked by `check`, which returns what is wrong (or undefined when it is fine). */
  | { kind: 'custom'; what: string; check: (v: unknown) => string | undefined };

/** A field: its check, whether it may be absent, and (in the type only) the value it holds. */
export interface Field<T, Optional extends boolean = boolean> {
  readonly type: FieldKind;
  readonly optional: Optional;
  /** Never set: carries T for {@link MessageOf}. */
  readonly value?: T;
}

export type Schema = Readonly<Record<string, Field<unknown>>>;

/** A member of a ring as sent by the master. */
export interface WirePeer {
  id: string;
  host: string;
  port: number;
}

export const uint = (max = Number.MAX_SAFE_INTEGER, min = 0): Field<number, false> => ({ type: { kind: 'uint', max, min }, optional: false });
export const str = (maxLength = 1024): Field<string, false> => ({ type: { kind: 'string', maxLength }, optional: false });
export const oneOf = <V extends string>(values: readonly V[]): Field<V, false> => ({
  type: { kind: 'string', maxLength: Math.max(...values.map((v) => v.length)), values }, optional: false,
});
export const bytes = (length?: number): Field<Uint8Array, false> => ({ type: { kind: 'bytes', length }, optional: false });
export const bool = (): Field<boolean, false> => ({ type: { kind: 'bool' }, optional: false });
export const peers = (): Field<WirePeer[], false> => ({ type: { kind: 'peers' }, optional: false });
export const custom = <T>(what: string, check: (v: unknown) => string | undefined): Field<T, false> => ({
  type: { kind: 'custom', what, check }, optional: false,
});
export const opt = <T>(f: Field<T, false>): Field<T, true> => ({ ...f, optional: true });

type ValueOf<F> = F extends Field<infer T> ? T : never;
type RequiredKeys<S> = { [K in keyof S]: S[K] extends Field<unknown, true> ? never : K }[keyof S];
type OptionalKeys<S> = { [K in keyof S]: S[K] extends Field<unknown, true> ? K : never }[keyof S];

/** The message type a schema describes: `{ t }` plus its required and optional fields. */
export type MessageOf<T extends string, S> = { t: T } & { [K in RequiredKeys<S>]: ValueOf<S[K]> } & {
  [K in OptionalKeys<S>]?: ValueOf<S[K]>;
} extends infer M ? { [K in keyof M]: M[K] } : never;

/** A short description of a received value for an error message. */
export function preview(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (v instanceof Uint8Array) return `${v.length} bytes`;
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '...' : v);
  if (typeof v === 'object') return Array.isArray(v) ? 'an array' : 'a map';
  return String(v);
}

const PEER_FIELDS = { id: str(300), host: str(255), port: uint(65535, 1) };

/** Checks one field's value; throws a ProtocolError naming the field, the message type and what was wrong. */
export function checkField(type: string, name: string, field: Field<unknown>, v: unknown): void {
  const where = `"${name}" of a "${type}" message`;
  const t = field.type;
  switch (t.kind) {
    case 'uint':
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < t.min || v > t.max) {
        throw new ProtocolError(`Expected ${where} to be an integer from ${t.min} to ${t.max}, got ${preview(v)}`);
      }
      return;
    case 'string':
      if (typeof v !== 'string' || v.length > t.maxLength) {
        throw new ProtocolError(`Expected ${where} to be a string of at most ${t.maxLength} characters, got ${preview(v)}`);
      }
      if (t.values && !t.values.includes(v)) {
        throw new ProtocolError(`Expected ${where} to be one of ${t.values.map((x) => JSON.stringify(x)).join(', ')}, got ${preview(v)}`);
      }
      return;
    case 'custom': {
      const why = t.check(v);
      if (why !== undefined) throw new ProtocolError(`Expected ${where} to be ${t.what}: ${why}`);
      return;
    }
    case 'bytes':
      if (!(v instanceof Uint8Array) || (t.length !== undefined && v.length !== t.length)) {
        throw new ProtocolError(`Expected ${where} to be ${t.length ?? 'some'} bytes, got ${preview(v)}`);
      }
      return;
    case 'bool':
      if (typeof v !== 'boolean') throw new ProtocolError(`Expected ${where} to be a boolean, got ${preview(v)}`);
      return;
    case 'peers':
      if (!Array.isArray(v) || v.length > 65536) throw new ProtocolError(`Expected ${where} to be an array of peers`);
      for (const p of v) {
        if (typeof p !== 'object' || p === null || Array.isArray(p)) throw new ProtocolError(`Expected ${where} to hold {id, host, port} maps`);
        if (Object.keys(p).length !== 3) throw new ProtocolError(`Expected ${where} to hold exactly {id, host, port}`);
        for (const [k, f] of Object.entries(PEER_FIELDS)) checkField(type, `${name}[].${k}`, f, (p as Record<string, unknown>)[k]);
      }
      return;
  }
}

/** Checks a whole message against its schema: no unknown fields, every required field present and valid. */
export function checkMessage(type: string, schema: Schema, msg: Record<string, unknown>): void {
  for (const key of Object.keys(msg)) {
    if (key !== 't' && !Object.hasOwn(schema, key)) throw new ProtocolError(`Unknown field "${key}" in a "${type}" message`);
  }
  for (const [name, field] of Object.entries(schema)) {
    const v = msg[name];
    if (v === undefined || v === null) {
      if (field.optional) continue;
      throw new ProtocolError(`Missing field "${name}" in a "${type}" message`);
    }
    checkField(type, name, field, v);
  }
}
