/**
 * One peer of `npm run demo`: joins the run through the master, then all-reduces a 16 MiB gradient-sized
 * vector every step (with retries when a peer is lost), checks the result and reports one JSON line per step.
 */
import { Communicator, TooFewPeersError } from '../lib/index';

const [master, token, label, valueArg] = process.argv.slice(2);
const value = Number(valueArg);
const COUNT = 4 << 20; // 16 MiB of float32

function emit(ev: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify({ label, ...ev }) + '\n');
}

async function main() {
  const comm = await Communicator.connect({ master, token, label, connections: 4, logLevel: 'error' });
  emit({ ev: 'joined', world: comm.groupWorldSize });
  const grad = new Float32Array(COUNT);
  for (let step = 0; step < 100_000; step++) {
    grad.fill(value);
    const t0 = performance.now();
    try {
      const [r] = await comm.allReduceMany([grad], { op: 'sum' });
      const ms = performance.now() - t0;
      // Each peer contributes its own value, so the sum tells who took part.
      emit({ ev: 'step', step, world: r.worldSize, sum: grad[0], last: grad[COUNT - 1], ms, mbps: (COUNT * 4) / (ms / 1e3) / 1e6 });
    } catch (err) {
      if (!(err instanceof TooFewPeersError)) throw err;
      emit({ ev: 'alone' });
    }
    // Every member votes at the same point of its loop, at the end of a step: a newcomer is admitted by this
    // vote and starts its first step together with the members.
    await comm.updateTopology();
  }
}

main().catch((err) => {
  emit({ ev: 'error', message: String(err?.message ?? err) });
  process.exit(1);
});
