/**
 * One peer of `npm run demo`: joins the run through the master, then all-reduces a 16 MiB gradient-sized
 * vector every step (with retries when a peer is lost), checks the result and reports one JSON line per step.
 * It also keeps a SharedState (16 MiB of 'weights' updated from each step's result, plus a revision) and syncs
 * it after every vote, so a late joiner receives the weights before its first step.
 */
import { Communicator, SharedState, TooFewPeersError, hashBytes } from '../lib/index';

const [master, token, label, valueArg] = process.argv.slice(2);
const value = Number(valueArg);
const COUNT = 4 << 20; // 16 MiB of float32

function emit(ev: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify({ label, ...ev }) + '\n');
}

async function main() {
  const comm = await Communicator.connect({ master, token, label, connections: 4, logLevel: 'error' });
  emit({ ev: 'joined', world: comm.groupWorldSize });
  const weights = new Float32Array(COUNT);
  const state = new SharedState({ weights });
  if (comm.currentEpoch > 1) {
    // A newcomer: the members sync right after the vote that admitted it; take their state before stepping.
    const t0 = performance.now();
    const r = await comm.syncSharedState(state, { strategy: comm.groupWorldSize > 1 ? 'receiveOnly' : 'enforcePopular' });
    emit({ ev: 'caughtUp', bytes: r.bytesReceived, keys: r.changedKeys, revision: r.revision, hash: await hashBytes(weights), ms: performance.now() - t0 });
  }
  const grad = new Float32Array(COUNT);
  for (let step = 0; step < 100_000; step++) {
    grad.fill(value);
    const t0 = performance.now();
    try {
      const [r] = await comm.allReduceMany([grad], { op: 'sum' });
      const ms = performance.now() - t0;
      // Each peer contributes its own value, so the sum tells who took part.
      emit({ ev: 'step', step, world: r.worldSize, sum: grad[0], last: grad[COUNT - 1], ms, mbps: (COUNT * 4) / (ms / 1e3) / 1e6 });
      // The same update on every member (from the identical reduced result): the weights stay bit-identical.
      for (let i = 0; i < COUNT; i += 4096) weights[i] += grad[i] * 1e-3 + (state.revision % 7);
    } catch (err) {
      if (!(err instanceof TooFewPeersError)) throw err;
      emit({ ev: 'alone' });
    }
    // Every member votes at the same point of its loop, at the end of a step: a newcomer is admitted by this
    // vote and syncs the shared state together with the members.
    await comm.updateTopology();
    state.revision++;
    await comm.syncSharedState(state);
    emit({ ev: 'synced', revision: state.revision, hash: await hashBytes(weights) });
  }
}

main().catch((err) => {
  emit({ ev: 'error', message: String(err?.message ?? err) });
  process.exit(1);
});
