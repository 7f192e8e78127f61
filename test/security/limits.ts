// What the security tests need of the operating system: Linux (/proc, many loopback addresses), and descriptor
// limits raised above a flood for the flooder and its target (prlimit; needs CAP_SYS_RESOURCE past the hard limit).
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** The hard descriptor limit of this process (what a child may raise its soft limit to without privileges). */
export function hardFdLimit(): number {
  return Number(execFileSync('prlimit', ['--pid', String(process.pid), '--nofile', '--raw', '--noheadings', '--output', 'HARD']).toString().trim());
}

/** Why these tests cannot run here (each process needs `limit` descriptors), or undefined when they can. */
export function floodSkipReason(limit: number): string | undefined {
  if (process.platform !== 'linux') return 'needs Linux (/proc for threads and descriptors, 127.x.y.z source addresses)';
  try {
    execFileSync('prlimit', ['--pid', String(process.pid), '--nofile'], { stdio: 'ignore' });
  } catch {
    return 'needs prlimit (util-linux) to raise the descriptor limits above the flood';
  }
  try {
    const hard = hardFdLimit();
    if (hard < limit) {
      // Raising past the hard limit needs CAP_SYS_RESOURCE: try on ourselves (restored at once).
      execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${hard}:${limit}`], { stdio: 'ignore' });
      execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${hard}:${hard}`], { stdio: 'ignore' });
    }
  } catch {
    return `cannot raise the descriptor limit to ${limit} (needs root or CAP_SYS_RESOURCE)`;
  }
  return undefined;
}

/** Sets a process's descriptor limit (soft and hard). */
export function setFdLimit(pid: number, n: number): void {
  execFileSync('prlimit', ['--pid', String(pid), `--nofile=${n}:${n}`]);
}

/** Sets only a process's soft descriptor limit (lowering and raising it back up to the hard limit needs no privilege). */
export function setSoftFdLimit(pid: number, n: number): void {
  execFileSync('prlimit', ['--pid', String(pid), `--nofile=${n}:`]);
}

/** Threads and open descriptors of a process. */
export function sampleProcess(pid: number): { threads: number; fds: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return { threads: Number(/^Threads:\s+(\d+)/m.exec(status)?.[1]), fds: readdirSync(`/proc/${pid}/fd`).length };
}

/** Samples a process every `everyMs` until stop(): the peaks. */
export function watchProcess(pid: number, everyMs = 100) {
  const peak = { threads: 0, fds: 0, samples: 0 };
  const take = () => {
    try {
      const s = sampleProcess(pid);
      peak.threads = Math.max(peak.threads, s.threads);
      peak.fds = Math.max(peak.fds, s.fds);
      peak.samples++;
    } catch {
      // the process is gone: the test's own checks say so
    }
  };
  take();
  const timer = setInterval(take, everyMs);
  return { peak, stop: () => clearInterval(timer) };
}
