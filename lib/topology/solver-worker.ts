/**
 * Runs {@link solveRing} in a worker thread, so that the master's control loop (heartbeats, votes, commits)
 * never waits on it: the exact solver takes up to a second or so at 12 peers. This file is both the caller's
 * side ({@link solveInWorker}) and the worker's entry (when loaded by a Worker with `workerData.tcclSolver`).
 */
import * as path from 'node:path';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { LinkMatrix, Solution, SolveOptions, solveRing } from './solver';

if (!isMainThread && parentPort && (workerData as { tcclSolver?: boolean } | undefined)?.tcclSolver) {
  const port = parentPort;
  port.once('message', (job: { matrix: LinkMatrix; options: SolveOptions }) => {
    try {
      port.postMessage({ ok: true, solution: solveRing(job.matrix, job.options) });
    } catch (err) {
      port.postMessage({ ok: false, message: (err as Error).message });
    }
  });
}

/**
 * Solves in a fresh worker thread; rejects after `timeoutMs` (the worker is terminated) or when the solver
 * throws (a bad matrix).
 *
 * @example
 * ```ts
 * const s = await solveInWorker({ bandwidth, rttMs }, { bytes: 64 << 20, current: [0, 1, 2, 3] });
 * console.log(s.order, s.currentMs, s.predictedMs);
 * ```
 */
export function solveInWorker(matrix: LinkMatrix, options: SolveOptions = {}, timeoutMs = 10_000): Promise<Solution> {
  return new Promise<Solution>((resolve, reject) => {
    // The same file, compiled (.js under dist/) or TypeScript source (tests and benches run lib/ through tsx, whose
    // loader a worker does not always inherit: its CommonJS hook is then registered in the worker first).
    const file = path.join(__dirname, `solver-worker${path.extname(__filename)}`);
    const source = file.endsWith('.ts') ? `require('tsx/cjs'); require(${JSON.stringify(file)});` : `require(${JSON.stringify(file)});`;
    let worker: Worker;
    try {
      worker = new Worker(source, { eval: true, workerData: { tcclSolver: true } });
    } catch (err) {
      reject(new Error(`Cannot start the topology solver's worker thread: ${(err as Error).message}`, { cause: err }));
      return;
    }
    let settled = false;
    const finish = (err: Error | undefined, s?: Solution) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      void worker.terminate();
      if (err) reject(err);
      else resolve(s!);
    };
    const timer = setTimeout(() => finish(new Error(`The topology solver did not finish within ${timeoutMs} ms`)), timeoutMs);
    worker.once('message', (r: { ok: boolean; solution?: Solution; message?: string }) => {
      finish(r.ok ? undefined : new Error(`The topology solver failed: ${r.message}`), r.solution);
    });
    worker.once('error', (err) => finish(new Error(`The topology solver's worker failed: ${err.message}`, { cause: err })));
    worker.once('exit', (code) => finish(new Error(`The topology solver's worker exited (code ${code}) without an answer`)));
    worker.postMessage({ matrix, options });
  });
}
