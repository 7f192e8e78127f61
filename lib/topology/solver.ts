/**
 * Ring order solver: given the measured directed links between the members of a group, the ring order that
 * minimises the predicted all-reduce time. Pure and synchronous (the master runs it in a worker thread,
 * solver-worker.ts, so its control loop never waits on it); docs/topology.md explains the model.
 *
 * Model of one ring all-reduce of `bytes` over N peers in `order` (data flows order[k] -> order[k+1]): every
 * link carries 2(N-1)/N x bytes, all links at once, pipelined in segments, so the ring runs at its slowest
 * link; the dependency chain of a segment goes about twice round the ring, so it adds 2(N-1)/N x the sum of
 * the one-way delays (RTT / 2) of the ring's links:
 *
 *   T(order) = 2(N-1)/N x ( bytes / min_k bw_eff(k) + sum_k rtt(k) / 2 )
 *
 * Pairs are measured one at a time, so a measurement cannot tell whether two slow links share one path (the
 * ocean cable between two regions). The model assumes they do: peers joined by links clearly faster than the
 * rest form a *region* ({@link regionsOf}), and the c ring links from region X to region Y share the capacity one of them
 * measured (bw_eff = bw / c). Where the links are in fact independent this only overestimates rings that
 * cross often, which are then never better anyway: the bottleneck is the same slow kind of link.
 *
 * The exact solver (up to {@link EXACT_MAX_PEERS} peers) is a depth-first branch and bound over rings starting
 * at peer 0, seeded with the heuristic's answer: a partial ring's bottleneck can only get worse as links are
 * added (counts only grow), which gives the bound. The heuristic is a local search (2-opt, Or-opt, swaps) with
 * greedy starts and random restarts within a time budget, on T with the sum of the links' transfer times as
 * tie-break (so that of two rings with the same bottleneck the one with fewer slow links wins).
 */

import { mulberry32 as rng } from '../random';

/** Directed link measurements: `bandwidth[i][j]` bytes/s from peer i to peer j, `rttMs[i][j]` round trip. */
export interface LinkMatrix {
  bandwidth: number[][];
  rttMs: number[][];
}

export interface SolveOptions {
  /** Bytes of the all-reduce the order is chosen for (default 64 MiB). */
  bytes?: number;
  /** Time budget of the local search, ms (default 1000); the exact search gets 10x this before giving up. */
  budgetMs?: number;
  /** The current order (indices into the matrix): kept unless another is strictly better. Default 0..N-1. */
  current?: number[];
  /** Seed of the heuristic's restarts (default 1), so that a run can be repeated. */
  seed?: number;
  /** Search exhaustively up to this many peers (default {@link EXACT_MAX_PEERS}). */
  exactMaxPeers?: number;
}

export interface Solution {
  /** The best order found, rotated to start where `current` starts. */
  order: number[];
  /** Predicted all-reduce time of `order`, ms. */
  predictedMs: number;
  /** Predicted all-reduce time of the current order, ms. */
  currentMs: number;
  /** Whether `order` is proven optimal under the model. */
  exact: boolean;
  /** Time the solver took, ms. */
  solveMs: number;
}

export const EXACT_MAX_PEERS = 12;
export const DEFAULT_SOLVE_BYTES = 64 << 20;
/** Regions exist only where link speeds split with at least this ratio between two consecutive speeds. */
const REGION_GAP = 2;

/**
 * Regions: the group's pair speeds (the slower direction of each pair), sorted, split at the widest ratio between
 * two consecutive ones when it is at least {@link REGION_GAP}; peers joined (transitively) by pairs above the
 * split form a region. Without such a gap (all links alike, or spread evenly) the group is one region: the
 * noise of measurements never splits it. Returns each peer's region number.
 */
export function regionsOf(m: LinkMatrix): number[] {
  const n = m.bandwidth.length;
  const pair = (i: number, j: number) => Math.min(m.bandwidth[i][j], m.bandwidth[j][i]);
  const speeds: number[] = [];
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) speeds.push(pair(i, j));
  speeds.sort((x, y) => x - y);
  let threshold = 0;
  let widest = REGION_GAP;
  for (let k = 0; k + 1 < speeds.length; k++) {
    const ratio = speeds[k + 1] / speeds[k];
    if (ratio >= widest) {
      widest = ratio;
      threshold = speeds[k + 1];
    }
  }
  const parent = [...Array(n).keys()];
  const find = (x: number): number => (parent[x] === x ? x : (parent[x] = find(parent[x])));
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) if (pair(i, j) >= threshold) parent[find(i)] = find(j);
  const ids = new Map<number, number>();
  return [...Array(n).keys()].map((i) => {
    const r = find(i);
    if (!ids.has(r)) ids.set(r, ids.size);
    return ids.get(r)!;
  });
}

/** The matrix with what the model derives from it (regions), for repeated predictions. */
class Model {
  readonly n: number;
  readonly region: number[];
  readonly factor: number;
  /** Ring links per shared path, during one cost() call. */
  private readonly counts: Int32Array;
  constructor(readonly m: LinkMatrix, readonly bytes: number) {
    this.n = m.bandwidth.length;
    this.region = regionsOf(m);
    this.factor = (2 * (this.n - 1)) / this.n;
    this.counts = new Int32Array(this.n * this.n);
  }

  /** Key of the shared path a link a -> b uses, or -1 inside a region. */
  path(a: number, b: number): number {
    const ra = this.region[a];
    const rb = this.region[b];
    return ra === rb ? -1 : ra * this.n + rb;
  }

  /** Predicted ms of a ring (or, for a partial path, the bound used by the exact search); [ms, tie-break]. */
  cost(order: readonly number[], closed = true, remaining = 0, minHalfRtt = 0): [number, number] {
    const links = closed ? order.length : order.length - 1;
    const counts = this.counts; // all zero between calls
    for (let k = 0; k < links; k++) {
      const p = this.path(order[k], order[(k + 1) % order.length]);
      if (p >= 0) counts[p]++;
    }
    let minBw = Infinity;
    let delay = remaining * minHalfRtt;
    let slow = 0;
    for (let k = 0; k < links; k++) {
      const a = order[k];
      const b = order[(k + 1) % order.length];
      const p = this.path(a, b);
      const bw = this.m.bandwidth[a][b] / (p >= 0 ? counts[p] : 1);
      minBw = Math.min(minBw, bw);
      delay += this.m.rttMs[a][b] / 2;
      slow += 1 / bw;
    }
    for (let k = 0; k < links; k++) {
      const p = this.path(order[k], order[(k + 1) % order.length]);
      if (p >= 0) counts[p] = 0;
    }
    return [this.factor * ((this.bytes / minBw) * 1000 + delay), slow];
  }
}

/** Predicted ring all-reduce time (ms) of `order` under the model above. */
export function predictRingMs(m: LinkMatrix, order: readonly number[], bytes = DEFAULT_SOLVE_BYTES): number {
  if (order.length < 2) return 0;
  return new Model(m, bytes).cost(order)[0];
}

/** Checks a matrix: square, N >= 2, positive finite bandwidths and non-negative finite RTTs off the diagonal. */
export function checkMatrix(m: LinkMatrix): number {
  const n = m.bandwidth?.length ?? 0;
  if (n < 2 || m.rttMs?.length !== n) throw new TypeError(`Expected an N x N bandwidth and RTT matrix with N >= 2, got ${n} rows`);
  for (let i = 0; i < n; i++) {
    if (m.bandwidth[i].length !== n || m.rttMs[i].length !== n) throw new TypeError(`Row ${i} of the link matrix does not have ${n} columns`);
    for (let j = 0; j < n; j++) {
      if (i === j) continue;
      const bw = m.bandwidth[i][j];
      const rtt = m.rttMs[i][j];
      if (!(bw > 0) || !Number.isFinite(bw)) throw new TypeError(`Bandwidth ${i} -> ${j} must be a positive finite number of bytes/s, got ${bw}`);
      if (!(rtt >= 0) || !Number.isFinite(rtt)) throw new TypeError(`RTT ${i} -> ${j} must be a non-negative finite number of ms, got ${rtt}`);
    }
  }
  return n;
}

/** Picks the ring order that minimises {@link predictRingMs}. */
export function solveRing(m: LinkMatrix, options: SolveOptions = {}): Solution {
  const started = performance.now();
  const n = checkMatrix(m);
  const model = new Model(m, options.bytes ?? DEFAULT_SOLVE_BYTES);
  const current = options.current ?? [...Array(n).keys()];
  if (current.length !== n || new Set(current).size !== n || current.some((x) => !(x >= 0 && x < n))) {
    throw new TypeError(`Expected "current" to be a permutation of 0..${n - 1}`);
  }
  const budgetMs = options.budgetMs ?? 1000;
  const currentMs = model.cost(current)[0];
  let order = localSearch(model, current, n <= (options.exactMaxPeers ?? EXACT_MAX_PEERS) ? Math.min(budgetMs, 20) : budgetMs, options.seed ?? 1);
  let exact = false;
  if (n <= (options.exactMaxPeers ?? EXACT_MAX_PEERS)) {
    const found = branchAndBound(model, order, performance.now() + 10 * budgetMs);
    order = found.order;
    exact = found.complete;
  }
  let predictedMs = model.cost(order)[0];
  // Keep the current order unless the new one is better by more than rounding.
  if (!(predictedMs < currentMs * (1 - 1e-9))) {
    order = [...current];
    predictedMs = currentMs;
  }
  return { order: rotateTo(order, current[0]), predictedMs, currentMs, exact, solveMs: performance.now() - started };
}

function rotateTo(order: number[], first: number): number[] {
  const i = order.indexOf(first);
  return [...order.slice(i), ...order.slice(0, i)];
}

/**
 * Every ring from peer 0, depth first, fastest next link first, cutting a branch as soon as its partial bound
 * reaches the best complete ring. `complete` is false when the deadline cut the search short.
 */
function branchAndBound(model: Model, seed: number[], deadline: number): { order: number[]; complete: boolean } {
  const { n, m } = model;
  let minHalfRtt = Infinity;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) if (i !== j) minHalfRtt = Math.min(minHalfRtt, m.rttMs[i][j] / 2);
  const byBw = [...Array(n).keys()].map((a) => [...Array(n).keys()].filter((b) => b !== a).sort((x, y) => m.bandwidth[a][y] - m.bandwidth[a][x]));
  let best = rotateTo(seed, 0);
  let bestCost = model.cost(best);
  const path = [0];
  const used = new Uint8Array(n);
  used[0] = 1;
  let visits = 0;
  let timedOut = false;
  const walk = (): void => {
    if (timedOut || (++visits % 4096 === 0 && performance.now() > deadline)) {
      timedOut = true;
      return;
    }
    if (path.length === n) {
      const c = model.cost(path);
      if (better(c, bestCost)) [best, bestCost] = [[...path], c];
      return;
    }
    const last = path[path.length - 1];
    for (const next of byBw[last]) {
      if (used[next]) continue;
      path.push(next);
      // Links still to add after this one: n - path.length, plus the closing link.
      const bound = model.cost(path, false, n - path.length + 1, minHalfRtt)[0];
      if (bound < bestCost[0] * (1 + 1e-12)) {
        used[next] = 1;
        walk();
        used[next] = 0;
      }
      path.pop();
    }
  };
  walk();
  return { order: best, complete: !timedOut };
}

function better(a: [number, number], b: [number, number]): boolean {
  if (a[0] < b[0] * (1 - 1e-12)) return true;
  return a[0] <= b[0] * (1 + 1e-12) && a[1] < b[1] * (1 - 1e-12);
}


/** Greedy start: from `first`, always follow the fastest link to a peer not yet in the ring. */
function greedy(m: LinkMatrix, first: number): number[] {
  const n = m.bandwidth.length;
  const used = new Uint8Array(n);
  const order = [first];
  used[first] = 1;
  while (order.length < n) {
    const a = order[order.length - 1];
    let best = -1;
    for (let j = 0; j < n; j++) if (!used[j] && (best < 0 || m.bandwidth[a][j] > m.bandwidth[a][best])) best = j;
    used[best] = 1;
    order.push(best);
  }
  return order;
}

/** Applies improving moves until none is left (or the deadline passes); returns the local optimum. */
function descend(model: Model, start: number[], deadline: number): { order: number[]; cost: [number, number] } {
  let order = start;
  let cost = model.cost(order);
  const n = order.length;
  // Accepts a candidate that is better and keeps scanning from there (cheaper than restarting every scan).
  const take = (cand: number[]) => {
    const c = model.cost(cand);
    if (!better(c, cost)) return false;
    [order, cost] = [cand, c];
    return true;
  };
  let improved = true;
  while (improved && performance.now() < deadline) {
    improved = false;
    // 2-opt: reverse order[i..j] (the links inside change direction: the matrix is directed).
    for (let i = 1; i < n - 1 && performance.now() < deadline; i++) {
      for (let j = i + 1; j < n; j++) {
        if (take([...order.slice(0, i), ...order.slice(i, j + 1).reverse(), ...order.slice(j + 1)])) improved = true;
      }
    }
    // Or-opt: move a segment of 1 to 3 peers elsewhere.
    for (let len = 1; len <= 3; len++) {
      for (let i = 1; i + len <= n && performance.now() < deadline; i++) {
        const seg = order.slice(i, i + len);
        const rest = [...order.slice(0, i), ...order.slice(i + len)];
        for (let p = 1; p <= rest.length; p++) {
          if (p !== i && take([...rest.slice(0, p), ...seg, ...rest.slice(p)])) {
            improved = true;
            break; // `seg` and `rest` describe the old order
          }
        }
      }
    }
    // Swap two peers.
    for (let i = 1; i < n - 1 && performance.now() < deadline; i++) {
      for (let j = i + 1; j < n; j++) {
        const cand = [...order];
        [cand[i], cand[j]] = [cand[j], cand[i]];
        if (take(cand)) improved = true;
      }
    }
  }
  return { order, cost };
}

/** Heuristic: descents from the current order, the greedy orders and random perturbations, within the budget. */
function localSearch(model: Model, current: number[], budgetMs: number, seed: number): number[] {
  const deadline = performance.now() + budgetMs;
  const n = current.length;
  const random = rng(seed);
  let best = descend(model, [...current], deadline);
  const consider = (start: number[]) => {
    const r = descend(model, start, deadline);
    if (better(r.cost, best.cost)) best = r;
  };
  for (let f = 0; f < n && performance.now() < deadline; f++) consider(greedy(model.m, f));
  while (performance.now() < deadline) {
    // Perturb the best (a double bridge) and descend again.
    const o = best.order;
    const cuts = [1 + Math.floor(random() * (n - 1)), 1 + Math.floor(random() * (n - 1)), 1 + Math.floor(random() * (n - 1))].sort((a, b) => a - b);
    const [a, b, c] = cuts;
    consider([...o.slice(0, a), ...o.slice(b, c), ...o.slice(a, b), ...o.slice(c)]);
  }
  return best.order;
}
