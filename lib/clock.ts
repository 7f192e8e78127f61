/**
 * The one clock for deadlines, timeouts and heartbeats: monotonic milliseconds (an arbitrary origin, never
 * stepped). Wall-clock time (`Date.now()`) jumps when the host's clock is set or slewed by NTP: a clock stepped
 * back would disable failure detection, one stepped forward would fire every deadline at once. `Date.now()` is
 * kept only for timestamps shown to humans (logs, the dashboard, `/status`).
 *
 * @example
 * ```ts
 * const deadline = monotonicMs() + 5000;
 * if (monotonicMs() >= deadline) throw new TimeoutError('...');
 * ```
 */
import { performance } from 'node:perf_hooks';

/** Milliseconds on a monotonic clock (fractional); only differences between two readings mean anything. */
export function monotonicMs(): number {
  return performance.now();
}
