/** Synthetic link matrices for the topology solver's tests and bench (bytes/s, ms). */
import { mulberry32 as prng } from '../../lib/random';
import type { LinkMatrix } from '../../lib/topology/solver';

/** Independent directed links: 10 Mbit/s to 1 Gbit/s (log-uniform), 1 to 150 ms RTT. */
export function randomMatrix(n: number, seed: number): LinkMatrix {
  const r = prng(seed);
  const bandwidth = [...Array(n)].map(() => Array(n).fill(0));
  const rttMs = [...Array(n)].map(() => Array(n).fill(0));
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      if (i === j) continue;
      bandwidth[i][j] = (10e6 * Math.pow(100, r())) / 8;
      rttMs[i][j] = 1 + 149 * r();
    }
  }
  return { bandwidth, rttMs };
}

/**
 * Regions: 1 Gbit/s and 10 ms RTT inside a region, 200 Mbit/s and 80 ms between regions, each link +-10%
 * noise (seeded) as a measurement would have.
 */
export function regionMatrix(n: number, regionOf: (i: number) => number, seed = 7, noise = 0.1): LinkMatrix {
  const r = prng(seed);
  const jitter = () => 1 + noise * (2 * r() - 1);
  const bandwidth = [...Array(n)].map(() => Array(n).fill(0));
  const rttMs = [...Array(n)].map(() => Array(n).fill(0));
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      if (i === j) continue;
      const inside = regionOf(i) === regionOf(j);
      bandwidth[i][j] = ((inside ? 1000e6 : 200e6) / 8) * jitter();
      rttMs[i][j] = (inside ? 10 : 80) * jitter();
    }
  }
  return { bandwidth, rttMs };
}
