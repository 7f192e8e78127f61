// Shared pieces of the benchmarks: statistics, JSON results, and building small native helper executables.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const ROOT = path.join(__dirname, '..');
export const RESULTS_DIR = path.join(ROOT, 'bench', 'results');

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function machineInfo(): Record<string, unknown> {
  return {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    date: new Date().toISOString(),
  };
}

export function writeResult(name: string, data: unknown): string {
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  const file = path.join(RESULTS_DIR, `${name}.json`);
  fs.writeFileSync(file, JSON.stringify(data, null, 2) + '\n');
  return file;
}

/** Compiles a C++ helper with the project's socket layer into build/bench/ (cached by source mtime). */
export function buildHelper(name: string, sources: string[]): string {
  const out = path.join(ROOT, 'build', 'bench', name);
  const srcs = sources.map((s) => path.join(ROOT, s));
  const newest = Math.max(...srcs.map((s) => fs.statSync(s).mtimeMs));
  if (!fs.existsSync(out) || fs.statSync(out).mtimeMs < newest) {
    fs.mkdirSync(path.dirname(out), { recursive: true });
    execFileSync('g++', ['-std=c++20', '-O2', '-I', path.join(ROOT, 'native/core'), ...srcs, '-o', out, '-lpthread'], { stdio: 'inherit' });
  }
  return out;
}

export function parseArgs(argv: string[]): Record<string, string | boolean> {
  const out: Record<string, string | boolean> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) continue;
    const key = a.slice(2);
    const next = argv[i + 1];
    if (next !== undefined && !next.startsWith('--')) {
      out[key] = next;
      i++;
    } else out[key] = true;
  }
  return out;
}

/** The value of `--name` on this process's command line, or `fallback`. */
export function argValue(name: string, fallback: string): string;
export function argValue(name: string, fallback?: string): string | undefined;
export function argValue(name: string, fallback?: string): string | undefined {
  const v = parseArgs(process.argv.slice(2))[name];
  return typeof v === 'string' ? v : fallback;
}

export function fmtBytes(n: number): string {
  if (n >= 2 ** 20) return `${n / 2 ** 20} MiB`;
  if (n >= 2 ** 10) return `${n / 2 ** 10} KiB`;
  return `${n} B`;
}
