/**
 * Local mode: an embedded master and N worker processes on this machine (loopback), the same code that runs
 * across machines. `node --import tsx examples/diloco/local.ts --workers 4 --mode diloco --steps 1000`
 * Extra options are passed to every worker (see train.ts --help).
 */
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { Master } from '../../lib/master/master';
import { splitWorkers } from '../flags';

export interface WorkerResult {
  shard: number;
  mode: string;
  accuracy: number;
  testLoss: number;
  curve: [number, number][];
  bytesSent: number;
  peakBytesPerSync: number;
  retries: number;
  wallSeconds: number;
  commSeconds: number;
  paramsHash: string;
}

export interface LocalRunOptions {
  workers: number;
  /** Arguments for every worker (train.ts options). */
  args: string[];
  /** Extra arguments for worker i (e.g. --exit-after for a crash). */
  workerArgs?: (i: number) => string[];
  /** Start one more worker (with --join) when the first worker's progress line reaches this step. */
  joinAtStep?: number;
  /** Shard given to the joining worker (default: the shard of worker 0 of N ... as I/N). */
  joinShard?: string;
  /** Echo worker output with a prefix. */
  echo?: boolean;
  /** Kill everything after this many ms (default 600000). */
  timeoutMs?: number;
}

const TRAIN = path.join(__dirname, 'train.ts');

/** Runs a master and the workers; resolves with the RESULT of every worker that finished. */
export async function runLocal(o: LocalRunOptions): Promise<{ results: WorkerResult[]; wallSeconds: number; exitCodes: number[] }> {
  const master = new Master({ host: '127.0.0.1', port: 0, logLevel: 'warn' });
  const port = await master.listen();
  const t0 = performance.now();
  const results: WorkerResult[] = [];
  const exitCodes: number[] = [];
  const children: ReturnType<typeof spawn>[] = [];
  let joined = false;
  const start = (i: number, extra: string[]) =>
    new Promise<void>((resolve) => {
      const child = spawn(process.execPath, ['--import', 'tsx', TRAIN, '--master', `127.0.0.1:${port}`, ...o.args, ...extra], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: process.env,
      });
      children.push(child);
      const onLine = (line: string) => {
        if (line.startsWith('RESULT ')) results.push(JSON.parse(line.slice(7)));
        else if (o.echo) process.stdout.write(`[worker ${i}] ${line}\n`);
        const m = /^step (\d+)\//.exec(line);
        if (m && o.joinAtStep !== undefined && !joined && Number(m[1]) >= o.joinAtStep) {
          joined = true;
          pending.push(start(o.workers, ['--join', '--shard', o.joinShard ?? `0/${o.workers}`]));
        }
      };
      readline.createInterface({ input: child.stdout! }).on('line', onLine);
      child.stderr!.on('data', (d: Buffer) => process.stderr.write(`[worker ${i}] ${d}`));
      child.on('exit', (code) => {
        exitCodes[i] = code ?? -1;
        resolve();
      });
    });
  const pending: Promise<void>[] = [];
  for (let i = 0; i < o.workers; i++) pending.push(start(i, ['--shard', `${i}/${o.workers}`, ...(o.workerArgs?.(i) ?? [])]));
  const timer = setTimeout(() => children.forEach((c) => c.pid && c.kill('SIGKILL')), o.timeoutMs ?? 600_000);
  try {
    for (let k = 0; k < pending.length; k++) await pending[k];
  } finally {
    clearTimeout(timer);
    await master.close();
  }
  return { results, wallSeconds: (performance.now() - t0) / 1000, exitCodes };
}

async function main() {
  const { workers, rest } = splitWorkers(process.argv.slice(2));
  const { results, wallSeconds } = await runLocal({ workers, args: rest, echo: true });
  for (const r of results.sort((a, b) => a.shard - b.shard)) {
    console.log(`worker ${r.shard}: accuracy ${(r.accuracy * 100).toFixed(2)}%  sent ${(r.bytesSent / 1e6).toFixed(2)} MB  params ${r.paramsHash}`);
  }
  console.log(`wall ${wallSeconds.toFixed(1)} s`);
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
