/**
 * One language-model worker: trains the character-level transformer of model.ts on its shard of the KJV text
 * with TensorFlow.js and syncs through a TCCL master.
 *
 *   node --import tsx examples/lm/train.ts --master HOST:48148 --token-file run.token --shard 0/4 --mode streaming
 *
 * Prints progress lines and, at the end, one `RESULT {json}` line (read by examples/lm/local.ts and bench/lm).
 */
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import * as tf from '@tensorflow/tfjs';
import { Communicator, type QuantizationOptions } from '../../lib/index';
import { allReduceGradients, TfjsDiLoCo, TfjsStreamingDiLoCo } from '../../lib/tfjs/index';
import { backendInfo, useBackend, type BackendName } from './backend';
import { CharTransformer } from './model';
import { loadCorpus, prepareCorpus, sampleBatch } from './data';
import { evaluate, lrAt, type LrSchedule } from './schedule';
import { choiceFlag, numberFlag, parseFlags, shardFlag } from '../flags';

const USAGE = `Options:
  --master HOST:PORT      the master (required unless --mode local)
  --token-file F          file with the run token (or TCCL_TOKEN)
  --shard I/N             this worker's shard of the training text (default 0/1)
  --mode M                ddp | diloco | async | streaming | local (default streaming)
  --steps N               inner steps (default 400)
  --batch B               sequences per step (default 8)
  --context T             characters per sequence (default 32)
  --d-model D             width (default 64)   --layers L  blocks (default 2)   --heads H (default 4)
  --lr X                  inner Adam learning rate, the peak with a schedule (default 0.003)
  --lr-schedule S         constant | cosine: linear warm-up, then cosine decay to --min-lr-ratio x lr at --steps (default constant)
  --warmup N              warm-up steps of the cosine schedule (default 50)
  --min-lr-ratio F        final learning rate of the cosine schedule, as a fraction of --lr (default 0.1)
  --inner-steps H         DiLoCo / Streaming DiLoCo H (default 40)
  --inner-seconds S       DiLoCo: also end each inner phase after S seconds (slow workers do fewer steps, weighted)
  --outer-lr X            outer Nesterov learning rate (default 0.7)
  --outer-momentum X      outer Nesterov momentum (default 0.9)
  --fragments P           Streaming DiLoCo fragments (default 4)
  --overlap T             Streaming DiLoCo overlap tau in inner steps (default 2)
  --quant C               uint8 | uint4 | float16 | bfloat16 (default: none)
  --backend B             wasm | cpu (default wasm; see README)
  --text FILE             train on this UTF-8 text instead of the KJV
  --eval-seqs N           validation and held-out sequences for the final losses (default 512)
  --slowdown F            run F times slower than the machine allows (sleep after each step), to emulate a slow worker
  --wait-peers N          before training, wait until the group has N workers (default 1)
  --join                  join a run in progress (receive the state from the group)
  --seed S                model init and data seed, the same on every worker (default 1)
  --log-every N           progress line every N steps (default 20)
  --connections K         TCP connections per data link (default 4)
  --advertise ADDR        address the other workers dial for this one (default: as the master sees it)
  --listen-host ADDR      address the data plane listens on (default 0.0.0.0)
  --data-port P           data-plane port (default: any free port)`;

async function main() {
  const a = parseFlags(process.argv.slice(2), USAGE);
  const num = (k: string, d: number) => numberFlag(a, k, d);
  const mode = choiceFlag(a, 'mode', ['ddp', 'diloco', 'async', 'streaming', 'local'] as const, 'streaming', USAGE);
  const [shard, shards] = shardFlag(a);
  const steps = num('steps', 400);
  const batch = num('batch', 8);
  const context = num('context', 32);
  const seed = num('seed', 1);
  const logEvery = num('log-every', 20);
  const quant = a.get('quant') as QuantizationOptions['codec'] | undefined;
  const quantization = quant ? { codec: quant } : undefined;
  const t0 = performance.now();

  await useBackend((a.get('backend') ?? 'wasm') as BackendName);
  const corpus = loadCorpus(a.get('text') ?? prepareCorpus((s) => console.log(s)));
  const model = new CharTransformer(
    { vocab: corpus.chars.length, context, dModel: num('d-model', 64), layers: num('layers', 2), heads: num('heads', 4) },
    seed,
  );
  const schedule: LrSchedule = {
    lr: num('lr', 3e-3), kind: choiceFlag(a, 'lr-schedule', ['constant', 'cosine'] as const, 'constant', USAGE),
    warmup: num('warmup', 50), minRatio: num('min-lr-ratio', 0.1), total: steps,
  };
  const optimizer = tf.train.adam(schedule.lr);
  const slowdown = num('slowdown', 1);
  if (!(slowdown >= 1)) throw new Error(`--slowdown must be a number >= 1, got ${a.get('slowdown')}`);

  let comm: Communicator | undefined;
  if (mode !== 'local') {
    const master = a.get('master') ?? process.env.TCCL_MASTER;
    if (!master) throw new Error('--master HOST:PORT is required (or --mode local)');
    const tokenFile = a.get('token-file');
    const token = tokenFile ? fs.readFileSync(tokenFile, 'utf8').trim() : process.env.TCCL_TOKEN || undefined;
    comm = await Communicator.connect({
      master, token, label: `lm-${shard}`, connections: num('connections', 4),
      advertiseAddress: a.get('advertise'), listenHost: a.get('listen-host'), dataPort: num('data-port', 0),
    });
    // every worker waits until the group is complete (voting the others in), so all start together
    if (!a.has('join')) await comm.waitForPeers(num('wait-peers', 1));
  }
  const outer = { lr: num('outer-lr', 0.7), momentum: num('outer-momentum', 0.9) };
  const strategy = a.has('join') ? 'receiveOnly' : 'enforcePopular';
  // With --inner-seconds workers do different numbers of inner steps: the run is counted in outer steps instead
  // (--steps / --inner-steps of them), so every worker stops after the same outer step.
  const innerSeconds = a.has('inner-seconds') ? num('inner-seconds', 0) : undefined;
  const outerSteps = Math.ceil(steps / num('inner-steps', 40));
  let diloco: TfjsDiLoCo | TfjsStreamingDiLoCo | undefined;
  if (comm && (mode === 'diloco' || mode === 'async')) {
    diloco = new TfjsDiLoCo(comm, { model: model.layers, innerSteps: num('inner-steps', 40), innerSeconds, outer, quantization, async: mode === 'async' });
  } else if (comm && mode === 'streaming') {
    diloco = new TfjsStreamingDiLoCo(comm, {
      model: model.layers, fragments: num('fragments', 4), innerSteps: num('inner-steps', 40), overlapSteps: num('overlap', 2), outer, quantization,
    });
    console.log(`fragments: ${diloco.fragmentLayers.map((f) => f.join('+')).join(' | ')}`);
  }
  if (diloco) await diloco.join({ strategy });
  if (comm && mode === 'ddp' && a.has('join')) throw new Error('--join is supported with the DiLoCo modes (the newcomer receives the outer state)');
  console.log(`model: ${model.parameterCount} parameters, ${JSON.stringify(backendInfo())}, ${corpus.train.length} training characters`);

  const xb = new Int32Array(batch * context);
  const yb = new Int32Array(batch * context);
  const curve: [number, number][] = [];
  let bytesSent = 0;
  let peak = 0;
  let lossAcc = 0;
  let lossN = 0;
  let commMs = 0;
  let computeMs = 0;
  let trained = 0;
  const first = diloco?.innerStep ?? 0;
  let roundOf = 0;
  let roundStep = 0;
  const tTrain = performance.now();
  for (let step = first + 1; innerSeconds !== undefined && diloco instanceof TfjsDiLoCo ? diloco.outerStep < outerSteps : step <= steps; step++) {
    sampleBatch(corpus.train, shard, shards, step, seed, xb, yb, context);
    const c0 = performance.now();
    // tfjs's Adam reads its learning rate at every step. With --inner-seconds workers do different numbers of
    // steps: the schedule follows the group's progress (outer steps times H, plus this round's steps).
    if (diloco instanceof TfjsDiLoCo && diloco.outerStep !== roundOf) [roundOf, roundStep] = [diloco.outerStep, 0];
    roundStep++;
    const at = innerSeconds !== undefined ? roundOf * num('inner-steps', 40) + roundStep : step;
    (optimizer as unknown as { learningRate: number }).learningRate = lrAt(schedule, Math.min(at, steps));
    const x = tf.tensor2d(xb, [batch, context], 'int32');
    const y = tf.tensor2d(yb, [batch, context], 'int32');
    let loss: number;
    if (mode === 'ddp' && comm) {
      const { value, grads } = tf.variableGrads(() => model.loss(x, y), model.variables);
      loss = value.dataSync()[0];
      const m0 = performance.now();
      computeMs += m0 - c0;
      const r = await allReduceGradients(comm, grads, { disposeInputs: true, ...(quantization ? { quantization } : {}) });
      commMs += performance.now() - m0;
      bytesSent += r.bytesSent;
      peak = Math.max(peak, r.bytesSent);
      const a0 = performance.now();
      optimizer.applyGradients(r.tensors as never); // a map by variable name, as variableGrads made it
      tf.dispose([value, r.tensors]);
      computeMs += performance.now() - a0;
    } else {
      const l = optimizer.minimize(() => model.loss(x, y), true, model.variables)!;
      loss = l.dataSync()[0];
      l.dispose();
      computeMs += performance.now() - c0;
    }
    tf.dispose([x, y]);
    if (slowdown > 1) await new Promise((r) => setTimeout(r, (slowdown - 1) * (performance.now() - c0)));
    trained += batch * context;
    lossAcc += loss;
    lossN++;
    const s0 = performance.now();
    if (diloco) await diloco.step();
    commMs += performance.now() - s0;
    if (step % logEvery === 0 || step === steps) {
      const sent = diloco ? diloco.stats.bytesSent : bytesSent;
      curve.push([step, lossAcc / lossN]);
      console.log(`step ${step}/${steps}  loss ${(lossAcc / lossN).toFixed(4)}  sent ${(sent / 1e6).toFixed(2)} MB  peers ${comm?.groupWorldSize ?? 1}  tensors ${tf.memory().numTensors}`);
      lossAcc = 0;
      lossN = 0;
    }
  }
  if (diloco) await diloco.finish();
  const trainSeconds = (performance.now() - tTrain) / 1000;
  const validLoss = evaluate(model, corpus.validation, num('eval-seqs', 512), context);
  const heldOutLoss = evaluate(model, corpus.heldOut, num('eval-seqs', 512), context);
  const hash = createHash('sha256');
  for (const v of model.variables) hash.update(Buffer.from((v.dataSync() as Float32Array).slice().buffer));
  const stats = diloco?.stats;
  const result = {
    shard, mode, steps, first, tokens: trained, validLoss, heldOutLoss, curve, parameters: model.parameterCount,
    bytesSent: stats ? stats.bytesSent : bytesSent,
    peakBytesPerSync: stats ? stats.peakBytesPerSync : peak,
    retries: stats?.retries ?? 0,
    wallSeconds: (performance.now() - t0) / 1000,
    trainSeconds,
    computeSeconds: computeMs / 1000,
    commSeconds: commMs / 1000,
    paramsHash: hash.digest('hex').slice(0, 16),
    fragments: diloco instanceof TfjsStreamingDiLoCo ? diloco.fragmentLayers : undefined,
    tensorsAtEnd: tf.memory().numTensors,
    backend: backendInfo(),
  };
  console.log(`done: validation loss ${validLoss.toFixed(4)}, held-out loss ${heldOutLoss.toFixed(4)} nats/char  sent ${(result.bytesSent / 1e6).toFixed(2)} MB  ${result.wallSeconds.toFixed(0)} s`);
  console.log(`RESULT ${JSON.stringify(result)}`);
  await comm?.close();
}

main().catch((err) => {
  console.error(err instanceof Error ? err.stack : err);
  process.exit(1);
});
