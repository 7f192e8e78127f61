/**
 * Measuring the directed links of a group over its own data plane: the same K connections per link that the
 * ring uses, through timed `exchange` operations (lib/engine.ts). Every member runs the same schedule: rounds
 * of a perfect matching (the circle method), so that each peer measures against one other at a time; in a pair
 * (a, b), a -> b first, then b -> a. One direction, sender s and receiver r:
 *
 * 1. RTT: three 8-byte pings s -> r answered by 8-byte pongs; the smallest round trip counts.
 * 2. Warm-up: {@link WARM_BYTES} s -> r, acknowledged; its rate sizes the real probe so that it lasts about
 *    `probeSeconds` on this link (between 1 MiB and `maxProbeBytes`): slow links get small probes.
 * 3. Probe: s tells r the size (8 bytes), sends it, r acknowledges; rate = size / (elapsed - RTT).
 *
 * Only the sender times (the acknowledgement closes its clock), so no clocks need to agree. Every operation has
 * a deadline; a lost peer fails the measurement with PeerLostError like any operation.
 */
import type { DataPlane } from '../collective';
import { InvalidArgumentError } from '../errors';
import { monotonicMs } from '../clock';

/** Exchange tags of link measurements start here: above user tags, below shared-state syncs (2^52). */
export const TOPOLOGY_TAG_BASE = 2 ** 51;
/** Tag steps per direction. */
const STEPS = 8;
/** Largest group measured (the tag layout has room for 1024 x 1024 directions per call). */
export const MAX_MEASURED_PEERS = 1024;
const WARM_BYTES = 256 * 1024;
const MIN_PROBE_BYTES = 1 << 20;
/** Largest probe a receiver accepts from a sender's header. */
const MAX_PROBE_BYTES = 256 << 20;
const PINGS = 3;

export interface MeasureOptions {
  /** Largest probe per direction, bytes (default 32 MiB). */
  maxProbeBytes?: number;
  /** Target duration of a probe, s (default 0.25). */
  probeSeconds?: number;
  /** Deadline of the whole measurement (monotonicMs() ms). */
  deadline: number;
  /** Deadline of one exchange, ms (default 10000). */
  opTimeoutMs?: number;
  /** Distinguishes calls in one epoch (tags must not repeat across calls that may have failed half way). */
  call: number;
  /** Measure only these pairs (`${a},${b}` with a < b), both directions; default every pair. */
  only?: ReadonlySet<string>;
}

export interface LinkMeasurement {
  /** Index of the receiver in the ring. */
  to: number;
  bytesPerSec: number;
  rttMs: number;
}

export interface MeasureResult {
  /** This peer's outgoing links. */
  links: LinkMeasurement[];
  /** Bytes this peer sent while measuring. */
  bytesSent: number;
  ms: number;
}

/** Rounds of disjoint pairs covering every pair of 0..n-1 once (circle method; with odd n one peer rests). */
export function matchingRounds(n: number): Array<Array<[number, number]>> {
  const m = n % 2 === 0 ? n : n + 1;
  const rounds: Array<Array<[number, number]>> = [];
  const ring = [...Array(m - 1).keys()].map((i) => i + 1);
  for (let r = 0; r < m - 1; r++) {
    const pairs: Array<[number, number]> = [];
    const seat = [0, ...ring];
    for (let i = 0; i < m / 2; i++) {
      const a = seat[i];
      const b = seat[m - 1 - i];
      if (a < n && b < n) pairs.push(a < b ? [a, b] : [b, a]);
    }
    rounds.push(pairs);
    ring.unshift(ring.pop()!);
  }
  return rounds;
}

/** Measures this peer's outgoing links (and serves the others' measurements of their links to it). */
export async function measureLinks(dp: DataPlane, me: number, n: number, o: MeasureOptions): Promise<MeasureResult> {
  if (n > MAX_MEASURED_PEERS) throw new InvalidArgumentError(`optimizeTopology measures groups of at most ${MAX_MEASURED_PEERS} peers, this one has ${n}`);
  const started = performance.now();
  const ctx: Ctx = {
    dp, n, o,
    maxProbe: Math.min(o.maxProbeBytes ?? 32 << 20, MAX_PROBE_BYTES),
    probeSeconds: o.probeSeconds ?? 0.25,
    buf: new Uint8Array(WARM_BYTES),
    sent: 0,
  };
  const links: LinkMeasurement[] = [];
  for (const round of matchingRounds(n)) {
    const pair = round.find(([a, b]) => a === me || b === me);
    if (!pair) continue;
    const [a, b] = pair;
    if (o.only && !o.only.has(`${a},${b}`)) continue;
    if (me === a) {
      links.push(await sender(ctx, a, b));
      await receiver(ctx, b, a);
    } else {
      await receiver(ctx, a, b);
      links.push(await sender(ctx, b, a));
    }
  }
  return { links, bytesSent: ctx.sent, ms: performance.now() - started };
}

interface Ctx {
  dp: DataPlane;
  n: number;
  o: MeasureOptions;
  maxProbe: number;
  probeSeconds: number;
  /** Reused payload buffer (grown as needed; its bytes do not matter). */
  buf: Uint8Array;
  sent: number;
}

function tagOf(ctx: Ctx, from: number, to: number, step: number): number {
  return TOPOLOGY_TAG_BASE + (((ctx.o.call % 4096) * 2 ** 20 + from * MAX_MEASURED_PEERS + to) * STEPS) + step;
}

function timeout(ctx: Ctx): number {
  const left = ctx.o.deadline - monotonicMs();
  if (left <= 0) return 1;
  return Math.max(1, Math.min(left, ctx.o.opTimeoutMs ?? 10_000));
}

function payload(ctx: Ctx, bytes: number): Uint8Array {
  if (ctx.buf.length < bytes) ctx.buf = new Uint8Array(bytes);
  return ctx.buf.subarray(0, bytes);
}

async function send(ctx: Ctx, to: number, tag: number, data: Uint8Array): Promise<void> {
  await ctx.dp.exchange({ tag, timeoutMs: timeout(ctx), sends: [{ to, stream: 0, data }] });
  ctx.sent += data.byteLength;
}

async function recv(ctx: Ctx, from: number, tag: number, data: Uint8Array): Promise<void> {
  await ctx.dp.exchange({ tag, timeoutMs: timeout(ctx), recvs: [{ from, stream: 0, data }] });
}

/** Round trip of `bytes` s -> r followed by an 8-byte acknowledgement r -> s, ms. */
async function timedSend(ctx: Ctx, s: number, r: number, step: number, bytes: number): Promise<number> {
  const ack = new Uint8Array(8);
  const t0 = performance.now();
  await send(ctx, r, tagOf(ctx, s, r, step), payload(ctx, bytes));
  await recv(ctx, r, tagOf(ctx, s, r, step + 1), ack);
  return performance.now() - t0;
}

async function sender(ctx: Ctx, s: number, r: number): Promise<LinkMeasurement> {
  let rttMs = Infinity;
  for (let i = 0; i < PINGS; i++) rttMs = Math.min(rttMs, await timedSend(ctx, s, r, 0, 8));
  const rate = (bytes: number, ms: number) => bytes / (Math.max(ms - rttMs, ms / 4) / 1000);
  const warm = rate(WARM_BYTES, await timedSend(ctx, s, r, 2, WARM_BYTES));
  const size = Math.min(ctx.maxProbe, Math.max(MIN_PROBE_BYTES, Math.round((warm * ctx.probeSeconds) / 65536) * 65536));
  const header = new Uint8Array(8);
  new DataView(header.buffer).setFloat64(0, size, true);
  await send(ctx, r, tagOf(ctx, s, r, 4), header);
  const probe = rate(size, await timedSend(ctx, s, r, 5, size));
  // The probe alone: the warm-up is short enough that a late timer or the RTT subtraction can inflate it.
  return { to: r, bytesPerSec: probe, rttMs };
}

async function receiver(ctx: Ctx, s: number, r: number): Promise<void> {
  const ack = new Uint8Array(8);
  const echo = async (step: number, bytes: number) => {
    await recv(ctx, s, tagOf(ctx, s, r, step), payload(ctx, bytes));
    await send(ctx, s, tagOf(ctx, s, r, step + 1), ack);
  };
  for (let i = 0; i < PINGS; i++) await echo(0, 8);
  await echo(2, WARM_BYTES);
  const header = new Uint8Array(8);
  await recv(ctx, s, tagOf(ctx, s, r, 4), header);
  const size = new DataView(header.buffer).getFloat64(0, true);
  if (!Number.isSafeInteger(size) || size < 1 || size > MAX_PROBE_BYTES) {
    throw new InvalidArgumentError(`A link probe from peer ${s} announced ${size} bytes; at most ${MAX_PROBE_BYTES} are accepted`);
  }
  await echo(5, size);
}
