/** Argument checks with messages that say which option was wrong, what it was and what is expected. */

export function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (typeof v === 'number') return String(v);
  if (typeof v === 'string') return JSON.stringify(v);
  if (ArrayBuffer.isView(v)) return `${v.constructor.name}(${(v as unknown as { length?: number }).length ?? v.byteLength})`;
  if (Array.isArray(v)) return `an array of length ${v.length}`;
  return typeof v === 'object' ? `an object (${(v as object).constructor?.name ?? 'Object'})` : typeof v;
}

export function checkInt(name: string, v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`;
    throw new RangeError(`DiLoCo option "${name}" must be an integer ${range}, got ${describeValue(v)}`);
  }
  return v;
}

/** A finite number in [min, max] (or (min, max] when `minExclusive`). */
export function checkNumber(name: string, v: unknown, min: number, max: number, minExclusive = false): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || (minExclusive ? v <= min : v < min) || v > max) {
    throw new RangeError(
      `DiLoCo option "${name}" must be a finite number ${minExclusive ? '>' : '>='} ${min} and <= ${max}, got ${describeValue(v)}`,
    );
  }
  return v;
}

export function checkOneOf<T extends string>(name: string, v: unknown, allowed: readonly T[]): T {
  if (typeof v !== 'string' || !allowed.includes(v as T)) {
    throw new TypeError(`DiLoCo option "${name}" must be one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}, got ${describeValue(v)}`);
  }
  return v as T;
}

export function checkFloat32(name: string, v: unknown): Float32Array {
  if (!(v instanceof Float32Array)) {
    throw new TypeError(`DiLoCo: "${name}" must be a Float32Array (a view of the model's parameters), got ${describeValue(v)}`);
  }
  if (v.length === 0) throw new RangeError(`DiLoCo: "${name}" is empty; every parameter tensor needs at least one element`);
  return v;
}

/** Rejects unknown keys so a misspelt option is an error, not a silent default. */
export function checkKeys(what: string, obj: object, allowed: readonly string[]): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k)) {
      throw new TypeError(`Unknown ${what} option "${k}"; expected one of ${allowed.join(', ')}`);
    }
  }
}
