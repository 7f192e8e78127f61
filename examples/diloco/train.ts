/**
 * One DiLoCo worker: trains the MLP on its shard of MNIST and syncs through a TCCL master.
 *
 *   node --import tsx examples/diloco/train.ts --master HOST:48148 --token-file run.token --shard 0/4
 *
 * Modes: diloco (default), async (async DiLoCo), streaming (Streaming DiLoCo), ddp (all-reduce of the gradients
 * every step: the data-parallel baseline), local (no communication at all).
 * Prints progress lines and, at the end, one `RESULT {json}` line (used by bench/diloco).
 */
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { Communicator } from '../../lib/peer/communicator';
import { DiLoCo, StreamingDiLoCo } from '../../lib/diloco/index';
import type { QuantizationOptions } from '../../lib/engine';
import { Adam, Mlp } from './model';
import { batchIndices, loadMnist } from './data';
import { choiceFlag, numberFlag, parseFlags, shardFlag } from '../flags';

const USAGE = `Options:
  --master HOST:PORT      the master (required unless --mode local)
  --token-file F          file with the run token (or TCCL_TOKEN)
  --shard I/N             this worker's data shard (default 0/1)
  --mode M                diloco | async | streaming | ddp | local (default diloco)
  --steps N               inner steps (default 1000)
  --batch B               batch size (default 32)
  --hidden H              hidden units (default 64)
  --lr X                  inner Adam learning rate (default 0.001)
  --inner-steps H         DiLoCo H (default 50)
  --inner-seconds S       DiLoCo: also end each inner phase after S seconds (slow workers do fewer steps, weighted)
  --outer-lr X            outer learning rate (default 0.7)
  --outer-momentum X      outer Nesterov momentum (default 0.9)
  --fragments P           Streaming DiLoCo fragments (default 4)
  --overlap T             Streaming DiLoCo tau (default 1)
  --quant C               uint8 | uint4 | float16 | bfloat16 (default: none)
  --wait-peers N          before training, wait until the group has N workers (fair starts; default 1)
  --join                  this worker joins a run in progress (receives the state)
  --seed S                model init seed, the same on every worker (default 1)
  --log-every N           progress line every N steps (default 100)
  --exit-after N          exit abruptly (no goodbye) after N inner steps (churn tests)
  --advertise ADDR        address the other workers dial for this one (default: as the master sees it)
  --data-port P           data-plane port to listen on (default: any free port)`;

async function main() {
  const a = parseFlags(process.argv.slice(2), USAGE);
  const num = (k: string, d: number) => numberFlag(a, k, d);
  const mode = choiceFlag(a, 'mode', ['diloco', 'async', 'streaming', 'ddp', 'local'] as const, 'diloco', USAGE);
  const [shard, shards] = shardFlag(a);
  const steps = num('steps', 1000);
  const batch = num('batch', 32);
  const logEvery = num('log-every', 100);
  const exitAfter = num('exit-after', 0);
  const quant = a.get('quant') as QuantizationOptions['codec'] | undefined;
  const quantization = quant ? { codec: quant } : undefined;
  const t0 = performance.now();

  const { train, test } = loadMnist();
  const model = new Mlp(num('hidden', 64), num('seed', 1));
  const adam = new Adam(model.params, num('lr', 1e-3));

  let comm: Communicator | undefined;
  if (mode !== 'local') {
    const master = a.get('master') ?? process.env.TCCL_MASTER;
    if (!master) throw new Error('--master HOST:PORT is required');
    const tokenFile = a.get('token-file');
    const token = tokenFile ? fs.readFileSync(tokenFile, 'utf8').trim() : process.env.TCCL_TOKEN || undefined;
    comm = await Communicator.connect({ master, token, label: `worker-${shard}`, advertiseAddress: a.get('advertise'), dataPort: num('data-port', 0), connections: 2 });
  }
  const waitPeers = num('wait-peers', 1);
  // every worker waits until the group is complete (voting the others in), so all start together
  if (comm && !a.has('join')) await comm.waitForPeers(waitPeers);
  const outer = { lr: num('outer-lr', 0.7), momentum: num('outer-momentum', 0.9) };
  const strategy = a.has('join') ? 'receiveOnly' : 'enforcePopular';
  // With --inner-seconds workers do different numbers of inner steps: the run is counted in outer steps instead
  // (--steps / --inner-steps of them), so every worker stops after the same outer step.
  const innerSeconds = a.has('inner-seconds') ? num('inner-seconds', 0) : undefined;
  const outerSteps = Math.ceil(steps / num('inner-steps', 50));
  let diloco: DiLoCo | undefined;
  let streaming: StreamingDiLoCo | undefined;
  if (comm && (mode === 'diloco' || mode === 'async')) {
    diloco = new DiLoCo(comm, { params: model.params, innerSteps: num('inner-steps', 50), innerSeconds, outer, quantization, async: mode === 'async' });
    await diloco.join({ strategy });
  } else if (comm && mode === 'streaming') {
    streaming = new StreamingDiLoCo(comm, {
      params: model.tensors(8), fragments: num('fragments', 4), innerSteps: num('inner-steps', 50), overlapSteps: num('overlap', 1), outer, quantization,
    });
    await streaming.join({ strategy });
  }
  const first = diloco?.innerStep ?? streaming?.innerStep ?? 0;
  const idx = new Uint32Array(batch);
  const curve: [number, number][] = [];
  let bytesSent = 0;
  let peak = 0;
  let lossAcc = 0;
  let lossN = 0;
  let commMs = 0;
  for (let step = first + 1; innerSeconds !== undefined && diloco ? diloco.outerStep < outerSteps : step <= steps; step++) {
    batchIndices(train.y.length, batch, shard, shards, step, idx);
    const loss = model.gradient(train.x, train.y, idx);
    if (mode === 'ddp' && comm) {
      const c0 = performance.now();
      for (let attempt = 0; ; attempt++) {
        try {
          const r = await comm.allReduce(model.grads, { op: 'avg', tag: 1, quantization });
          bytesSent += r.bytesSent;
          peak = Math.max(peak, r.bytesSent);
          break;
        } catch (err) {
          if (!(err as { retryable?: boolean }).retryable || attempt > 16) throw err;
        }
      }
      commMs += performance.now() - c0;
    }
    adam.step(model.grads);
    lossAcc += loss;
    lossN++;
    const c0 = performance.now();
    if (diloco) await diloco.step();
    if (streaming) await streaming.step();
    commMs += performance.now() - c0;
    if (exitAfter && step >= exitAfter) process.exit(3); // a crash: no goodbye to anyone
    if (step % logEvery === 0 || step === steps) {
      const stats = diloco?.stats ?? streaming?.stats;
      const sent = stats ? stats.bytesSent : bytesSent;
      const peers = comm ? comm.groupWorldSize : 1;
      curve.push([step, lossAcc / lossN]);
      console.log(`step ${step}/${steps}  loss ${(lossAcc / lossN).toFixed(4)}  sent ${(sent / 1e6).toFixed(2)} MB  peers ${peers}`);
      lossAcc = 0;
      lossN = 0;
    }
  }
  if (diloco) await diloco.finish();
  if (streaming) await streaming.finish();
  const ev = model.evaluate(test.x, test.y);
  const stats = diloco?.stats ?? streaming?.stats;
  const result = {
    shard, mode, steps, accuracy: ev.accuracy, testLoss: ev.loss, curve,
    bytesSent: stats ? stats.bytesSent : bytesSent,
    peakBytesPerSync: stats ? stats.peakBytesPerSync : peak,
    retries: stats?.retries ?? 0,
    wallSeconds: (performance.now() - t0) / 1000,
    commSeconds: commMs / 1000,
    paramsHash: createHash('sha256').update(Buffer.from(model.params.buffer, model.params.byteOffset, model.params.byteLength)).digest('hex').slice(0, 16),
  };
  console.log(`done: test accuracy ${(ev.accuracy * 100).toFixed(2)}%  test loss ${ev.loss.toFixed(4)}  sent ${(result.bytesSent / 1e6).toFixed(2)} MB`);
  console.log(`RESULT ${JSON.stringify(result)}`);
  await comm?.close();
}

main().catch((err) => {
  console.error(err instanceof Error ? err.stack : err);
  process.exit(1);
});
