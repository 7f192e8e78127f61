/**
 * Runs the language-model workers as separate processes through one master: by default an embedded master on
 * loopback, the same code that runs across machines.
 *
 *   npm run lm -- --workers 4 --mode streaming --steps 400
 *
 * Options other than --workers go to every worker (see `node --import tsx examples/lm/train.ts --help`).
 * bench/lm uses runWorkers() with its own master, per-worker addresses behind the WAN emulator, a kill and a join.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { Master } from '../../lib/index';
import { splitWorkers } from '../flags';

export interface WorkerResult {
  shard: number;
  mode: string;
  steps: number;
  /** Inner step this worker started from (> 0 for a worker that joined late). */
  first: number;
  tokens: number;
  /** Loss on the validation split (for tuning) and on the held-out split (reported). */
  validLoss: number;
  heldOutLoss: number;
  curve: [number, number][];
  parameters: number;
  bytesSent: number;
  peakBytesPerSync: number;
  retries: number;
  /** Process start to exit, and the training loop alone (first step to finish()). */
  wallSeconds: number;
  trainSeconds: number;
  computeSeconds: number;
  commSeconds: number;
  paramsHash: string;
  fragments?: string[][];
  tensorsAtEnd: number;
  backend: { backend: string; simd: boolean; threads: boolean };
}

export interface RunOptions {
  workers: number;
  /** train.ts arguments for every worker. */
  args: string[];
  /** Extra arguments of worker i (i = workers for the one that joins). */
  workerArgs?: (i: number) => string[];
  /** host:port of a running master; default: an embedded master on 127.0.0.1. */
  master?: string;
  /** SIGKILL this worker when its progress line reaches this step. */
  kill?: { worker: number; atStep: number };
  /** Start one more worker (with --join) when worker 0's progress line reaches this step. */
  joinAtStep?: number;
  /** Echo the workers' lines with a prefix. */
  echo?: boolean;
  /** Kill everything after this many ms (default 1,800,000). */
  timeoutMs?: number;
}

export interface RunOutcome {
  results: WorkerResult[];
  wallSeconds: number;
  exitCodes: Record<number, number | string>;
  /** Step of worker `kill.worker`'s last progress line before SIGKILL, and worker 0's step when the joiner started. */
  killedAt?: number;
  joinedAt?: number;
}

const TRAIN = path.join(__dirname, 'train.ts');

/** Runs the workers to the end; resolves with the RESULT of every worker that finished. */
export async function runWorkers(o: RunOptions): Promise<RunOutcome> {
  let embedded: Master | undefined;
  let master = o.master;
  if (!master) {
    // Defaults: a tfjs step blocks a worker's JavaScript thread, not its heartbeats (they come from its control thread).
    embedded = new Master({ host: '127.0.0.1', port: 0, logLevel: 'warn' });
    master = `127.0.0.1:${await embedded.listen()}`;
  }
  const t0 = performance.now();
  const out: RunOutcome = { results: [], wallSeconds: 0, exitCodes: {} };
  const children = new Map<number, ChildProcess>();
  const pending: Promise<void>[] = [];
  const start = (i: number, extra: string[]) =>
    new Promise<void>((resolve) => {
      const args = ['--import', 'tsx', TRAIN, '--master', master!, ...o.args, ...extra, ...(o.workerArgs?.(i) ?? [])];
      const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
      children.set(i, child);
      const onLine = (line: string) => {
        if (line.startsWith('RESULT ')) {
          out.results.push(JSON.parse(line.slice(7)) as WorkerResult);
          return;
        }
        if (o.echo && line.trim()) process.stdout.write(`[worker ${i}] ${line}\n`);
        const m = /^step (\d+)\//.exec(line);
        if (!m) return;
        const step = Number(m[1]);
        if (o.kill && i === o.kill.worker && out.killedAt === undefined && step >= o.kill.atStep) {
          out.killedAt = step;
          child.kill('SIGKILL');
        }
        if (o.joinAtStep !== undefined && i === 0 && out.joinedAt === undefined && step >= o.joinAtStep) {
          out.joinedAt = step;
          pending.push(start(o.workers, ['--join', '--shard', `${o.kill?.worker ?? 0}/${o.workers}`]));
        }
      };
      readline.createInterface({ input: child.stdout! }).on('line', onLine);
      // tfjs prints a banner about tfjs-node on stderr; show the rest
      child.stderr!.on('data', (d: Buffer) => {
        const s = d.toString().split('\n').filter((l) => l.trim() && !/tfjs-node|====|Hi there|speed things up|https:\/\/|^\s*$/.test(l));
        if (s.length) process.stderr.write(s.map((l) => `[worker ${i}] ${l}\n`).join(''));
      });
      child.on('exit', (code, signal) => {
        out.exitCodes[i] = code ?? signal ?? -1;
        resolve();
      });
    });
  for (let i = 0; i < o.workers; i++) pending.push(start(i, ['--shard', `${i}/${o.workers}`]));
  const killAll = () => children.forEach((c) => c.exitCode === null && c.signalCode === null && c.kill('SIGKILL'));
  const timer = setTimeout(killAll, o.timeoutMs ?? 1_800_000);
  // Ctrl-C or a kill of this process takes the workers with it
  const onSignal = (sig: NodeJS.Signals) => {
    killAll();
    process.kill(process.pid, sig);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    for (let k = 0; k < pending.length; k++) await pending[k];
  } finally {
    clearTimeout(timer);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await embedded?.close();
  }
  out.wallSeconds = (performance.now() - t0) / 1000;
  return out;
}

async function main() {
  const { workers, rest } = splitWorkers(process.argv.slice(2));
  if (!rest.includes('--wait-peers')) rest.push('--wait-peers', String(workers));
  const { results, wallSeconds } = await runWorkers({ workers, args: rest, echo: true });
  for (const r of results.sort((a, b) => a.shard - b.shard)) {
    console.log(`worker ${r.shard}: held-out loss ${r.heldOutLoss.toFixed(4)}  sent ${(r.bytesSent / 1e6).toFixed(2)} MB  weights ${r.paramsHash}`);
  }
  console.log(`wall ${wallSeconds.toFixed(1)} s`);
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
