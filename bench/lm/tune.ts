/**
 * Tuning for the language-model bench, on the VALIDATION split only (never the held-out text that bench/lm/run.ts
 * reports). Each trial trains the model of examples/lm with the same data, schedule and evaluation code as
 * examples/lm/train.ts, in one process and without a network, to save the CPU the real rows spend on it:
 * - ddp: the group's step is one Adam step on the four workers' batches together (the mean of the four
 *   gradients, which is what data parallel all-reduces);
 * - diloco: four workers, each with its own Adam state, and lib/diloco's DiLoCo (the same outer optimizer code
 *   as the real rows) over an in-process group (test/helpers/diloco-in-process.ts) that averages exactly;
 * - local: one worker alone.
 * Data parallel and DiLoCo get the same number of trials. Every trial goes to bench/results/lm-tune.json with its
 * validation loss, and `chosen` names the best of each method, which bench/lm/run.ts uses.
 *
 *   npm run bench:lm:tune [-- --steps 1200 --inner-steps 40 --jobs 3 --with-local]
 *   npm run bench:lm:tune -- --report      (the trials as a table)
 *   node --import tsx bench/lm/tune.ts --trial '{"method":"diloco","lr":0.003,"outerLr":0.7,"outerMomentum":0.9}'   (one trial, printed)
 *   node --import tsx bench/lm/tune.ts --trials '[{"method":"ddp","lr":0.002}]' --out FILE   (other trials, another file)
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { machineInfo, parseArgs, RESULTS_DIR } from '../common';

export interface Trial {
  method: 'ddp' | 'diloco' | 'local';
  /** Peak inner learning rate (cosine schedule). */
  lr: number;
  outerLr?: number;
  outerMomentum?: number;
  /** DiLoCo's H for this trial (default --inner-steps). */
  innerSteps?: number;
}

export interface TrialResult extends Trial {
  validLoss: number;
  /** How the text was split among the workers (trials with another sharding are kept apart, as superseded). */
  sharding: string;
  steps: number;
  innerSteps: number;
  curve: [number, number][];
  cpuSeconds: number;
  wallSeconds: number;
}

const a = parseArgs(process.argv.slice(2));
const num = (k: string, d: number) => (a[k] === undefined ? d : Number(a[k]));
const W = 4;
const STEPS = num('steps', 1200);
const H = num('inner-steps', 40);
const SHAPE = { layers: 2, context: 32, batch: 8, dModel: 64, heads: 4 };
const SCHEDULE = { kind: 'cosine' as const, warmup: num('warmup', 50), minRatio: num('min-lr-ratio', 0.1) };
const EVAL = num('eval-seqs', 512);
const MIN_H = num('min-inner-steps', 40);
const SHARDING = 'every 4th 4 KiB block';
const OUT = typeof a.out === 'string' ? path.resolve(a.out) : path.join(RESULTS_DIR, 'lm-tune.json');

/**
 * The grid: three trials each. Data parallel's learning rate around the best of the first round (3e-3; 8e-3 and
 * 1.2e-2 were worse); DiLoCo's inner rate (the same, and higher for a worker's 4x smaller batch) and outer rate
 * (the DiLoCo paper's 0.7, and lower: 1.0 was worse in the first round), Nesterov momentum 0.9.
 */
export const GRID: Trial[] = [
  { method: 'ddp', lr: 2e-3 },
  { method: 'ddp', lr: 3e-3 },
  { method: 'ddp', lr: 5e-3 },
  { method: 'diloco', lr: 3e-3, outerLr: 0.7, outerMomentum: 0.9 },
  { method: 'diloco', lr: 5e-3, outerLr: 0.7, outerMomentum: 0.9 },
  { method: 'diloco', lr: 3e-3, outerLr: 0.5, outerMomentum: 0.9 },
  // what more bytes buy: smaller H (never chosen for the bench, see choose())
  { method: 'diloco', lr: 3e-3, outerLr: 0.7, outerMomentum: 0.9, innerSteps: 20 },
  { method: 'diloco', lr: 3e-3, outerLr: 0.7, outerMomentum: 0.9, innerSteps: 10 },
];

async function runTrial(t: Trial): Promise<TrialResult> {
  const tf = await import('@tensorflow/tfjs');
  const { useBackend } = await import('../../examples/lm/backend');
  const { CharTransformer } = await import('../../examples/lm/model');
  const { loadCorpus, prepareCorpus, sampleBatch } = await import('../../examples/lm/data');
  const { evaluate, lrAt } = await import('../../examples/lm/schedule');
  const { DiLoCo } = await import('../../lib/diloco/index');
  const { InProcessGroup } = await import('../../test/helpers/diloco-in-process');
  await useBackend('wasm');
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const corpus = loadCorpus(typeof a.text === 'string' ? a.text : prepareCorpus());
  const model = new CharTransformer({ vocab: corpus.chars.length, ...SHAPE }, 1);
  const vars = model.variables;
  const schedule = { lr: t.lr, ...SCHEDULE, total: STEPS };
  const { batch, context } = SHAPE;
  const curve: [number, number][] = [];
  let acc = 0;
  let accN = 0;
  const note = (step: number, loss: number) => {
    acc += loss;
    accN++;
    if (step % 20 === 0) {
      curve.push([step, acc / accN]);
      acc = accN = 0;
    }
  };
  const adamStep = (opt: ReturnType<typeof tf.train.adam>, step: number, xs: Int32Array, ys: Int32Array, rows: number): number => {
    (opt as unknown as { learningRate: number }).learningRate = lrAt(schedule, step);
    const x = tf.tensor2d(xs, [rows, context], 'int32');
    const y = tf.tensor2d(ys, [rows, context], 'int32');
    const l = opt.minimize(() => model.loss(x, y), true, vars)!;
    const v = l.dataSync()[0];
    tf.dispose([x, y, l]);
    return v;
  };
  const n = batch * context;
  if (t.method === 'ddp' || t.method === 'local') {
    const workers = t.method === 'ddp' ? W : 1;
    const opt = tf.train.adam(t.lr);
    const xs = new Int32Array(workers * n);
    const ys = new Int32Array(workers * n);
    for (let step = 1; step <= STEPS; step++) {
      // worker i's batch exactly as train.ts draws it; the mean loss over all of them has the mean gradient
      for (let i = 0; i < workers; i++) sampleBatch(corpus.train, i, W, step, 1, xs.subarray(i * n, (i + 1) * n), ys.subarray(i * n, (i + 1) * n), context);
      note(step, adamStep(opt, step, xs, ys, workers * batch));
    }
  } else {
    // Each worker's weights live in host arrays between its steps; the DiLoCo instances read and write them.
    const shapes = vars.map((v) => v.shape);
    const init = vars.map((v) => (v.dataSync() as Float32Array).slice());
    const local = Array.from({ length: W }, () => init.map((x) => x.slice()));
    const opts = Array.from({ length: W }, () => tf.train.adam(t.lr));
    const { members } = InProcessGroup.create(W);
    const dl = members.map(
      (m, i) => new DiLoCo(m, { params: local[i], innerSteps: t.innerSteps ?? H, outer: { lr: t.outerLr ?? 0.7, momentum: t.outerMomentum ?? 0.9 } }),
    );
    await Promise.all(dl.map((d) => d.join()));
    const xs = new Int32Array(n);
    const ys = new Int32Array(n);
    for (let step = 1; step <= STEPS; step++) {
      let sum = 0;
      for (let i = 0; i < W; i++) {
        vars.forEach((v, k) => tf.tidy(() => v.assign(tf.tensor(local[i][k], shapes[k]))));
        sampleBatch(corpus.train, i, W, step, 1, xs, ys, context);
        sum += adamStep(opts[i], step, xs, ys, batch);
        vars.forEach((v, k) => local[i][k].set(v.dataSync() as Float32Array));
      }
      note(step, sum / W);
      await Promise.all(dl.map((d) => d.step()));
    }
    // every worker holds the outer parameters now
    vars.forEach((v, k) => tf.tidy(() => v.assign(tf.tensor(local[0][k], shapes[k]))));
  }
  const validLoss = evaluate(model, corpus.validation, EVAL, context);
  const c = process.cpuUsage(c0);
  return { ...t, validLoss, sharding: SHARDING, steps: STEPS, innerSteps: t.innerSteps ?? H, curve, cpuSeconds: (c.user + c.system) / 1e6, wallSeconds: (performance.now() - t0) / 1000 };
}

const key = (t: Trial) => JSON.stringify([t.method, t.lr, t.outerLr, t.outerMomentum, t.method === 'diloco' ? (t.innerSteps ?? H) : undefined]);

function readResults(): { trials: TrialResult[]; superseded?: { note: string; trials: TrialResult[] } } {
  return fs.existsSync(OUT) ? JSON.parse(fs.readFileSync(OUT, 'utf8')) : { trials: [] };
}
const SUPERSEDED_NOTE =
  'Trials with each worker on a contiguous quarter of the text (the sharding before this one): DiLoCo ended barely below ' +
  'a worker alone, so the shards became every 4th block, spread over the whole text, and tuning started again.';

/**
 * The best trial of each method by validation loss. DiLoCo only among trials with H >= --min-inner-steps (default
 * 40): with uint8 pseudo-gradients that is what sends at least 100x fewer bytes than data parallel (4 bytes per
 * parameter every step against 1 every H steps); the trials with a smaller H show what the bytes buy.
 */
export function choose(trials: TrialResult[]): Record<string, TrialResult> {
  const best: Record<string, TrialResult> = {};
  for (const t of trials) {
    if (t.method === 'diloco' && t.innerSteps < MIN_H) continue;
    if (!best[t.method] || t.validLoss < best[t.method].validLoss) best[t.method] = t;
  }
  return best;
}

function save(trials: TrialResult[]): void {
  const chosen = choose(trials);
  const before = readResults();
  const old = [...(before.superseded?.trials ?? []), ...before.trials.filter((t) => t.sharding !== SHARDING)];
  const data = {
    machine: machineInfo(),
    config: { workers: W, steps: STEPS, innerSteps: H, sharding: SHARDING, model: SHAPE, schedule: SCHEDULE, evalSeqs: EVAL, split: 'validation', minInnerSteps: MIN_H },
    trials,
    ...(old.length ? { superseded: { note: SUPERSEDED_NOTE, trials: old } } : {}),
    chosen: Object.fromEntries(
      Object.entries(chosen).map(([m, t]) => [m, { lr: t.lr, outerLr: t.outerLr, outerMomentum: t.outerMomentum, innerSteps: t.method === 'diloco' ? t.innerSteps : undefined, validLoss: t.validLoss }]),
    ),
  };
  fs.writeFileSync(OUT, JSON.stringify(data, null, 2) + '\n');
}

/** Runs the grid `jobs` trials at a time, each in its own process; keeps the trials already in the file. */
async function main(): Promise<void> {
  const done = readResults().trials.filter((t) => t.steps === STEPS && t.sharding === SHARDING);
  const grid: Trial[] = typeof a.trials === 'string' ? JSON.parse(a.trials) : GRID;
  const todo = grid.concat(a['with-local'] === true ? [{ method: 'local', lr: 3e-3 }] : []).filter((t) => !done.some((d) => key(d) === key(t)));
  const jobs = num('jobs', 3);
  let next = 0;
  const worker = async () => {
    while (next < todo.length) {
      const t = todo[next++];
      process.stderr.write(`trial ${JSON.stringify(t)} ...\n`);
      const r = await new Promise<TrialResult>((resolve, reject) => {
        const args = ['--import', 'tsx', __filename, '--trial', JSON.stringify(t), '--steps', String(STEPS), '--inner-steps', String(H), '--eval-seqs', String(EVAL)];
        const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
        let result: TrialResult | undefined;
        readline.createInterface({ input: child.stdout! }).on('line', (l) => {
          if (l.startsWith('TRIAL ')) result = JSON.parse(l.slice(6));
        });
        child.on('exit', (code) => (result ? resolve(result) : reject(new Error(`trial ${JSON.stringify(t)} exited with ${code}`))));
      });
      done.push(r);
      save(done);
      process.stderr.write(`  ${JSON.stringify(t)}: validation ${r.validLoss.toFixed(4)} (${r.cpuSeconds.toFixed(0)} CPU s)\n`);
    }
  };
  await Promise.all(Array.from({ length: jobs }, worker));
  save(done);
  for (const [m, t] of Object.entries(choose(done))) console.log(`${m}: ${JSON.stringify({ lr: t.lr, outerLr: t.outerLr, outerMomentum: t.outerMomentum })} validation ${t.validLoss.toFixed(4)}`);
}

/** The trials as a markdown table (README), from the file. */
function report(): void {
  const d = readResults();
  const best = choose(d.trials);
  const rows = [...d.trials].sort((x, y) => (x.method === y.method ? x.validLoss - y.validLoss : x.method.localeCompare(y.method)));
  console.log('| method | inner lr (peak) | outer lr / momentum | H | validation loss |\n|---|---|---|---|---|');
  for (const t of [...rows, ...(d.superseded?.trials ?? [])]) {
    const chosen =
      best[t.method] === t ? ' (chosen)'
      : t.sharding !== SHARDING ? ' (superseded: contiguous shards)'
      : t.method === 'diloco' && t.innerSteps < MIN_H ? ` (H < ${MIN_H}: more bytes, not eligible)`
      : '';
    const outer = t.method === 'diloco' ? `${t.outerLr} / ${t.outerMomentum}` : '';
    console.log(`| ${t.method} | ${t.lr} | ${outer} | ${t.method === 'diloco' ? t.innerSteps : ''} | ${t.validLoss.toFixed(4)}${chosen} |`);
  }
}

if (require.main === module) {
  const run = a.report === true ? Promise.resolve(report()) : typeof a.trial === 'string' ? runTrial(JSON.parse(a.trial)).then((r) => console.log(`TRIAL ${JSON.stringify(r)}`)) : main();
  run.catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
