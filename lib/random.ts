/**
 * A small deterministic PRNG (mulberry32): the same seed gives the same sequence on every peer and every run,
 * which the topology solver's restarts and the tests' inputs rely on. Not for anything secret.
 *
 * @example
 * ```ts
 * const next = mulberry32(42);
 * const x = next(); // in [0, 1)
 * ```
 */
export function mulberry32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
