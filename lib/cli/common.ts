/**
 * What the commands of `tccl` share: argument parsers with exact messages (commander prints them as
 * `error: option '--port <n>' argument 'x' is invalid. <message>`), reading the run token, and running a script
 * of the repository (demo, benchmarks, stress) under tsx.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { InvalidArgumentError } from 'commander';
import { parseHostPort } from '../validate';

/** A parser for an integer option from `min` to `max`. */
export function intArg(min: number, max: number): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`Expected an integer from ${min} to ${max}.`);
    return n;
  };
}

/** A parser for a `host:port` option. */
export function hostPortArg(v: string): string {
  try {
    parseHostPort(v, 'the address');
  } catch (err) {
    throw new InvalidArgumentError(`${(err as Error).message}.`);
  }
  return v;
}

/** A parser for an option that takes one of `values`. */
export function choiceArg<T extends string>(values: readonly T[]): (v: string) => T {
  return (v: string) => {
    const x = v.toLowerCase() as T;
    if (!values.includes(x)) throw new InvalidArgumentError(`Expected one of ${values.join(', ')}.`);
    return x;
  };
}

/** Where the commands print (tests capture it). */
export interface CliOutput {
  out(text: string): void;
  err(text: string): void;
}

/** A usage error found after parsing: printed like commander's own, exit code 2. */
export class UsageError extends Error {}

/** The run token: from `file` when given, else TCCL_TOKEN, else none. Never from argv (other users can read it). */
export function readToken(file: string | undefined): string | undefined {
  if (file === undefined) return process.env.TCCL_TOKEN || undefined;
  let token: string;
  try {
    token = fs.readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new UsageError(`cannot read the token file ${file}: ${(err as Error).message}`);
  }
  if (!token) throw new UsageError(`the token file ${file} is empty: write a token into it, or make one with "tccl token --out ${file}"`);
  return token;
}

/** The repository root (lib/cli/ and dist/cli/ are both two levels down). */
export const ROOT = path.join(__dirname, '..', '..');

/**
 * Runs a TypeScript script of the repository (`rel` from its root) with `args`, output to this terminal;
 * resolves with its exit code. The demo, benchmarks and stress live in the repository, not in the npm package.
 */
export async function runRepoScript(rel: string, args: string[]): Promise<number> {
  const file = path.join(ROOT, rel);
  if (!fs.existsSync(file)) {
    throw new UsageError(`${rel} is not here: this command runs from a clone of the TCCL repository (the npm package holds only the library)`);
  }
  try {
    require.resolve('tsx', { paths: [ROOT] });
  } catch {
    throw new UsageError('this command needs the repository\'s development dependencies: run "npm install" in the clone first');
  }
  const child = spawn(process.execPath, ['--import', 'tsx', file, ...args], { cwd: ROOT, stdio: 'inherit' });
  const forward = (sig: NodeJS.Signals) => child.kill(sig);
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  try {
    return await new Promise<number>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 + 2 : 1)));
    });
  } finally {
    process.off('SIGINT', forward);
    process.off('SIGTERM', forward);
  }
}
