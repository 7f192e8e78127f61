/**
 * Language-model bench: four worker processes train the character-level transformer of examples/lm on the KJV
 * text through a real master, every byte (data plane and control plane) through the WAN emulator
 * (test/harness/wan/wanproxy.cpp): each worker and the master sit behind their own emulated link of `--mbps` Mbit/s
 * and `--rtt-ms` / 2 one-way delay. Every row trains the same number of tokens (except the churn row: a worker
 * dies, another joins later; and the rows with one slow worker, measured by tokens per second). Learning rates
 * and outer settings come from bench/results/lm-tune.json (`npm run bench:lm:tune`, tuned on the validation
 * split; the loss reported here is on the held-out split). Writes bench/results/lm.json and bench/results/lm.svg
 * after every row.
 *
 *   npm run bench:lm [-- --steps 1200 --inner-steps 40 --mbps 100 --rtt-ms 40 --only ddp,diloco] [--quick] [--verbose]
 *   npm run bench:lm -- --redraw     (chart and table again from bench/results/lm.json)
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Master } from '../../lib/index';
import { machineInfo, parseArgs, writeResult, RESULTS_DIR } from '../common';
import { WanEmulator } from '../../test/harness/wan/emulator';
import { prepareCorpus, CORPUS_SOURCE } from '../../examples/lm/data';
import { runWorkers, type RunOutcome, type WorkerResult } from '../../examples/lm/local';
import { measureBackends, type BackendTiming } from './backends';
import { lmChart, type Row } from './chart';

const a = parseArgs(process.argv.slice(2));
const quick = a.quick === true;
const num = (k: string, d: number) => (a[k] === undefined ? d : Number(a[k]));
const W = 4;
/** The tuned settings (bench/lm/tune.ts chose them on the validation split), or the defaults without a tuning file. */
function tunedSettings(): { ddp: { lr: number }; diloco: { lr: number; outerLr: number; outerMomentum: number; innerSteps?: number }; source: string } {
  const file = path.join(RESULTS_DIR, 'lm-tune.json');
  const d = fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')) : undefined;
  const c = d?.chosen;
  const dl = c?.diloco;
  return {
    ddp: { lr: c?.ddp?.lr ?? 3e-3 },
    diloco: dl ? { lr: dl.lr, outerLr: dl.outerLr, outerMomentum: dl.outerMomentum, innerSteps: dl.innerSteps } : { lr: 3e-3, outerLr: 0.7, outerMomentum: 0.9 },
    source: c?.ddp && dl ? 'bench/results/lm-tune.json' : `bench/results/lm-tune.json where it has a choice, defaults elsewhere`,
  };
}
const TUNED = tunedSettings();
const STEPS = num('steps', quick ? 48 : 1200);
const H = num('inner-steps', quick ? 12 : (TUNED.diloco.innerSteps ?? 40));
const P = num('fragments', 4);
const TAU = num('overlap', 2);
const MBPS = num('mbps', 100);
const RTT = num('rtt-ms', 40);
const SHAPE = { layers: num('layers', 2), context: num('context', 32), batch: num('batch', 8), dModel: num('d-model', 64) };
if (STEPS % H !== 0) throw new Error(`--steps (${STEPS}) must be a multiple of --inner-steps (${H}), so that every run ends on an outer step`);
const only = typeof a.only === 'string' ? a.only.split(',') : [];
const SLOW = 3;

const DP_ARGS = ['--lr', String(TUNED.ddp.lr)];
const DILOCO_ARGS = ['--lr', String(TUNED.diloco.lr), '--outer-lr', String(TUNED.diloco.outerLr), '--outer-momentum', String(TUNED.diloco.outerMomentum)];
const verbose = a.verbose === true;

interface RowSpec {
  name: string;
  label: string;
  args: string[];
  churn?: boolean;
  /** Worker W-1 runs SLOW times slower; the row is measured by tokens per second, not at equal tokens. */
  slow?: boolean;
  /** Inner phases bounded by time too: H fast steps' worth of seconds, from the diloco row's compute time. */
  innerSeconds?: boolean;
}

const ROWS: RowSpec[] = [
  { name: 'ddp', label: 'data parallel (gradients every step)', args: ['--mode', 'ddp', ...DP_ARGS] },
  { name: 'diloco', label: `DiLoCo, H = ${H}`, args: ['--mode', 'diloco', ...DILOCO_ARGS] },
  { name: 'diloco-uint8', label: `DiLoCo, H = ${H}, uint8`, args: ['--mode', 'diloco', '--quant', 'uint8', ...DILOCO_ARGS] },
  { name: 'streaming-uint8', label: `Streaming DiLoCo, P = ${P}, tau = ${TAU}, uint8`, args: ['--mode', 'streaming', '--quant', 'uint8', ...DILOCO_ARGS] },
  // no communication, at DiLoCo's inner settings (a single worker's batch): what data parallel must beat clearly
  { name: 'local', label: 'each worker alone (no communication)', args: ['--mode', 'local', '--lr', String(TUNED.diloco.lr)] },
  {
    name: 'streaming-churn',
    label: `Streaming (as above), worker 3 killed at 1/3, a new one started at 1/2`,
    args: ['--mode', 'streaming', '--quant', 'uint8', ...DILOCO_ARGS],
    churn: true,
  },
  { name: 'slow-lockstep', label: `DiLoCo, worker 3 at 1/${SLOW} speed, lockstep (H steps each)`, args: ['--mode', 'diloco', ...DILOCO_ARGS], slow: true },
  {
    name: 'slow-innerseconds',
    label: `DiLoCo, worker 3 at 1/${SLOW} speed, innerSeconds (weighted by steps)`,
    args: ['--mode', 'diloco', ...DILOCO_ARGS],
    slow: true,
    innerSeconds: true,
  },
];

async function runRow(spec: RowSpec, common: string[], innerSeconds?: number): Promise<Row> {
  const emu = await WanEmulator.start();
  // The master's defaults: a tfjs step holds a worker's JavaScript thread, not its heartbeats (docs/master.md).
  const master = new Master({ host: '127.0.36.1', port: 0, logLevel: 'warn' });
  try {
    const masterPort = await master.listen();
    const link = { delayMs: RTT / 2, aggMbps: MBPS };
    await emu.setLink(1, link);
    await emu.setLink(2, link);
    const mr = await emu.addRoute({ listenHost: '127.0.37.1', targetHost: '127.0.36.1', targetPort: masterPort, fwdLink: 1, revLink: 2 });
    // worker v listens on 127.0.39.v+1 and is reached only at 127.0.38.v+1 through its own link (one more for the joiner)
    const ports: number[] = [];
    for (let v = 0; v <= W; v++) {
      await emu.setLink(10 + v, link);
      await emu.setLink(40 + v, link);
      const r = await emu.addRoute({ listenHost: `127.0.38.${v + 1}`, targetHost: `127.0.39.${v + 1}`, targetPort: 0, fwdLink: 10 + v, revLink: 40 + v });
      ports.push(r.port);
    }
    const before = await emu.stats();
    const outcome: RunOutcome = await runWorkers({
      workers: W,
      master: `127.0.37.1:${mr.port}`,
      args: [...common, ...spec.args],
      workerArgs: (i) => [
        '--listen-host', `127.0.39.${i + 1}`, '--data-port', String(ports[i]), '--advertise', `127.0.38.${i + 1}`,
        ...(spec.slow && i === W - 1 ? ['--slowdown', String(SLOW)] : []),
        ...(innerSeconds !== undefined ? ['--inner-seconds', innerSeconds.toFixed(2)] : []),
      ],
      // the newcomer process starts at 1/2 and is admitted at the group's next sync after it connects
      ...(spec.churn ? { kill: { worker: W - 1, atStep: Math.round(STEPS / 3) }, joinAtStep: Math.round(STEPS / 2) } : {}),
      echo: verbose,
    });
    const after = await emu.stats();
    let wire = 0;
    for (const [id, l] of Object.entries(after.links)) wire += l.bytes - (before.links[id]?.bytes ?? 0);
    return { ...summarize(spec, outcome, wire), ...(innerSeconds !== undefined ? { innerSeconds } : {}) };
  } finally {
    await master.close();
    await emu.close();
  }
}

function summarize(spec: RowSpec, o: RunOutcome, wire: number): Row {
  const rs = [...o.results].sort((x, y) => x.shard - y.shard || x.first - y.first);
  if (rs.length === 0) throw new Error(`${spec.name}: no worker finished (exit codes ${JSON.stringify(o.exitCodes)})`);
  const full = rs.filter((r) => r.first === 0);
  const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
  const tokensPerStep = SHAPE.batch * SHAPE.context;
  // the workers that logged at the same steps (a slow worker with innerSeconds does fewer steps)
  const same = full.filter((r) => r.curve.length === full[0].curve.length);
  const curve = full[0].curve.map(([s], i) => [s, mean(same.map((r) => r.curve[i][1]))] as [number, number]);
  const tokens = rs.reduce((s, r) => s + r.tokens, 0) + (o.killedAt ?? 0) * tokensPerStep;
  const trainSeconds = Math.max(...full.map((r) => r.trainSeconds));
  return {
    name: spec.name,
    label: spec.label,
    equalTokens: !spec.slow && !spec.churn,
    validLoss: mean(rs.map((r) => r.validLoss)),
    heldOutLoss: mean(rs.map((r) => r.heldOutLoss)),
    heldOutLossRange: [Math.min(...rs.map((r) => r.heldOutLoss)), Math.max(...rs.map((r) => r.heldOutLoss))],
    tokens,
    tokensPerSecond: tokens / trainSeconds,
    stepsPerWorker: rs.map((r) => r.tokens / tokensPerStep),
    bytesPerWorker: mean(full.map((r) => r.bytesSent)),
    peakBytesPerSync: Math.max(...rs.map((r) => r.peakBytesPerSync)),
    wireBytesPerWorker: wire / W,
    trainSeconds,
    wallSeconds: o.wallSeconds,
    computeSeconds: mean(full.map((r) => r.computeSeconds)),
    commSeconds: mean(full.map((r) => r.commSeconds)),
    identical: new Set(rs.map((r) => r.paramsHash)).size === 1,
    workersFinished: rs.length,
    killedAt: o.killedAt,
    joinedAt: o.joinedAt,
    admittedAt: rs.find((r) => r.first > 0)?.first,
    curve,
    fragments: rs[0].fragments,
    retries: Math.max(...rs.map((r) => r.retries)),
  };
}

function table(rows: Row[]): string {
  const base = rows.find((r) => r.name === 'ddp');
  const pct = (r: Row) => (base && r !== base ? ` (${r.heldOutLoss >= base.heldOutLoss ? '+' : ''}${(100 * (r.heldOutLoss / base.heldOutLoss - 1)).toFixed(1)}%)` : '');
  const lines = [
    '| run | held-out loss (nats/char) | validation loss | tokens | MB sent per worker | vs data parallel | peak KB per sync | training wall-clock | compute / comm per worker | identical weights |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of rows.filter((x) => !x.name.startsWith('slow-'))) {
    const ratio = base && r.bytesPerWorker > 0 && r !== base ? `${(base.bytesPerWorker / r.bytesPerWorker).toFixed(0)}x fewer` : r === base ? '1x' : '';
    const speed = base ? base.trainSeconds / r.trainSeconds : 1;
    const wall = base && r !== base ? (speed >= 1 ? ` (${speed.toFixed(1)}x faster)` : ` (${(1 / speed).toFixed(1)}x slower)`) : '';
    lines.push(
      `| ${r.label} | ${r.heldOutLoss.toFixed(3)}${pct(r)} | ${r.validLoss?.toFixed(3) ?? ''} | ${(r.tokens / 1e6).toFixed(2)} M | ${(r.bytesPerWorker / 1e6).toFixed(2)} | ${ratio} | ${(r.peakBytesPerSync / 1e3).toFixed(1)} | ${r.trainSeconds.toFixed(0)} s${wall} | ${r.computeSeconds.toFixed(0)} s / ${r.commSeconds.toFixed(0)} s | ${r.name === 'local' || r.name.startsWith('streaming') ? 'n/a' : r.identical ? 'yes' : 'no'} |`,
    );
  }
  const slow = rows.filter((x) => x.name.startsWith('slow-'));
  if (slow.length) {
    lines.push('', '| workers of different speeds (not at equal tokens) | tokens per second | inner steps per worker | tokens | held-out loss | training wall-clock |', '|---|---|---|---|---|---|');
    for (const r of slow) {
      lines.push(
        `| ${r.label}${r.innerSeconds ? `, innerSeconds ${r.innerSeconds.toFixed(1)} s` : ''} | ${r.tokensPerSecond?.toFixed(0) ?? ''} | ${(r.stepsPerWorker ?? []).join(' / ')} | ${(r.tokens / 1e6).toFixed(2)} M | ${r.heldOutLoss.toFixed(3)}${pct(r)} | ${r.trainSeconds.toFixed(0)} s |`,
      );
    }
  }
  return lines.join('\n');
}

async function main() {
  if (a.redraw === true) {
    // re-render the chart and the table from the last results, without training
    const d = JSON.parse(fs.readFileSync(path.join(RESULTS_DIR, `lm${quick ? '-quick' : ''}.json`), 'utf8'));
    fs.writeFileSync(path.join(RESULTS_DIR, `lm${quick ? '-quick' : ''}.svg`), lmChart(d.rows, d.config));
    console.log(table(d.rows));
    return;
  }
  const t0 = performance.now();
  const corpus = prepareCorpus((s) => process.stderr.write(`${s}\n`)); // once, before the workers race for it
  let backends: BackendTiming[] | undefined;
  if (a['no-backends'] !== true) {
    process.stderr.write('timing the tfjs backends ...\n');
    backends = measureBackends(SHAPE, quick ? 3 : 8);
    for (const b of backends) process.stderr.write(`  ${b.backend}: ${b.stepWallMs.toFixed(0)} ms per step (CPU ${b.stepCpuMs.toFixed(0)} ms)\n`);
  }
  const common = [
    '--steps', String(STEPS), '--inner-steps', String(H), '--fragments', String(P), '--overlap', String(TAU), '--wait-peers', String(W),
    '--layers', String(SHAPE.layers), '--context', String(SHAPE.context), '--batch', String(SHAPE.batch), '--d-model', String(SHAPE.dModel),
    '--log-every', String(Math.max(5, Math.round(STEPS / 50))), '--text', corpus, '--backend', String(a.backend ?? 'wasm'),
    '--lr-schedule', 'cosine', '--warmup', String(num('warmup', 50)), '--min-lr-ratio', String(num('min-lr-ratio', 0.1)), '--eval-seqs', String(num('eval-seqs', 512)),
  ];
  const suffix = quick ? '-quick' : '';
  const resultFile = path.join(RESULTS_DIR, `lm${suffix}.json`);
  // rows of an earlier run with other steps, H or learning rates are not comparable: dropped
  let last = only.length && fs.existsSync(resultFile) ? JSON.parse(fs.readFileSync(resultFile, 'utf8')) : undefined;
  if (last && (last.config?.steps !== STEPS || last.config?.innerSteps !== H)) last = undefined;
  const same = (k: 'ddp' | 'diloco') => JSON.stringify(last?.config?.tuned?.[k]) === JSON.stringify(TUNED[k]);
  const previous: Row[] = (last?.rows ?? []).filter((r: Row) => same(r.name === 'ddp' ? 'ddp' : 'diloco'));
  backends ??= last?.backends;
  // with --only, the other rows of the last results stay (in the usual order)
  const rows: Row[] = previous.filter((r) => !only.includes(r.name));
  const failed: string[] = [];
  const config = {
    workers: W, steps: STEPS, innerSteps: H, fragments: P, overlapSteps: TAU, linkMbps: MBPS, rttMs: RTT, model: SHAPE, corpus: CORPUS_SOURCE,
    tuned: TUNED, schedule: { kind: 'cosine', warmup: num('warmup', 50), minLrRatio: num('min-lr-ratio', 0.1) }, slowdown: SLOW,
  };
  const order = (r: Row) => ROWS.findIndex((x) => x.name === r.name);
  const save = () => {
    rows.sort((x, y) => order(x) - order(y));
    const file = writeResult(`lm${suffix}`, { machine: machineInfo(), config, backends, rows, failed, benchSeconds: (performance.now() - t0) / 1000 });
    fs.writeFileSync(path.join(RESULTS_DIR, `lm${suffix}.svg`), lmChart(rows, config));
    return file;
  };
  const unknown = only.filter((n) => !ROWS.some((r) => r.name === n));
  if (unknown.length) throw new Error(`--only: no row named ${unknown.join(', ')} (rows: ${ROWS.map((r) => r.name).join(', ')})`);
  // --only runs its rows in the order given
  for (const spec of only.length ? only.map((n) => ROWS.find((r) => r.name === n)!) : ROWS) {
    process.stderr.write(`running ${spec.name} ...\n`);
    try {
      // innerSeconds: the compute time of H inner steps, as the lockstep row just before measured it (same load;
      // the slow worker's sleep is not compute), else the diloco or ddp row
      const ref = ['slow-lockstep', 'diloco', 'ddp'].map((n) => rows.find((r) => r.name === n)).find((r) => r !== undefined);
      const innerSeconds = !spec.innerSeconds ? undefined : a['inner-seconds'] !== undefined ? num('inner-seconds', 0) : ref ? (ref.computeSeconds / STEPS) * H : undefined;
      if (spec.innerSeconds && innerSeconds === undefined) throw new Error('needs the slow-lockstep, diloco or ddp row first (or --inner-seconds S)');
      const row = await runRow(spec, common, innerSeconds);
      const at = rows.findIndex((r) => r.name === row.name);
      if (at >= 0) rows.splice(at, 1);
      rows.push(row);
      save();
      process.stderr.write(
        `  ${spec.name}: held-out ${row.heldOutLoss.toFixed(3)}  ${(row.bytesPerWorker / 1e6).toFixed(2)} MB/worker  peak ${(row.peakBytesPerSync / 1e3).toFixed(1)} KB  train ${row.trainSeconds.toFixed(0)} s  identical ${row.identical}\n`,
      );
    } catch (err) {
      failed.push(`${spec.name}: ${(err as Error).message}`);
      process.stderr.write(`  ${(err as Error).message}\n`);
    }
  }
  const file = save();
  console.log(table(rows));
  if (failed.length) console.log(`\nNot measured:\n${failed.map((f) => `- ${f}`).join('\n')}`);
  console.log(`\n${file} (${((performance.now() - t0) / 60000).toFixed(1)} min)`);
  if (failed.length) process.exitCode = 1;
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
