// Communicator peer processes (test/fixtures/communicator-peer.ts) and the values they contribute.
import { PeerProcess } from '../harness/process';
import type { CommunicatorOptions } from '../../lib/peer/communicator';

/** Starts a communicator peer with these options (+ `value`, its contribution); await `.ready`. */
export function startPeer(options: Partial<CommunicatorOptions> & { master: string; value?: number }): PeerProcess {
  return new PeerProcess('test/fixtures/communicator-peer.ts', { argv: [JSON.stringify(options)] });
}

/** The vector a peer contributes at a step: element i = value * 1000 + (i % 7) + step (exact in float32). */
export function contribution(value: number, step: number, n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = value * 1000 + (i % 7) + step;
  return a;
}

/** Expected first elements after a sum over contributors with these `value`s at `step`. */
export function expectedFirst(values: number[], step: number, count = 8): number[] {
  return Array.from({ length: count }, (_, i) => values.reduce((s, v) => s + v * 1000 + (i % 7) + step, 0));
}

export { PeerEvent, PeerProcess, waitFor } from '../harness/process';
