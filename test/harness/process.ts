// The one child-process harness of the tests and benchmarks: starts a TypeScript script as a real Node process
// and talks to it in JSON lines. The parent writes requests `{ id, cmd, ...args }` on the child's stdin; the
// child (usually through test/harness/runner.ts) writes events `{ ev, ... }` on stdout, a reply being the event
// `{ ev: 'reply', id, ... }`. Every wait has a deadline or ends when the process exits.
import { ChildProcess, spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import * as path from 'node:path';
import * as readline from 'node:readline';

export const ROOT = path.join(__dirname, '..', '..');

/** One line a child printed. */
export interface PeerEvent {
  ev: string;
  id?: number;
  ok?: boolean;
  [k: string]: unknown;
}

export interface SpawnOptions {
  /** Arguments after the script path. */
  argv?: string[];
  /** Extra environment (on top of this process's). */
  env?: Record<string, string>;
  /** A command the node process runs under, e.g. `['ip', 'netns', 'exec', 'ns1']` (a process in a network namespace). */
  prefix?: string[];
}

/** Keeps this much of a child's stderr for error messages. */
const STDERR_KEEP = 64 * 1024;

export class PeerProcess extends EventEmitter {
  readonly child: ChildProcess;
  /** Every event the child printed, in order. */
  readonly events: PeerEvent[] = [];
  /** The end of what the child wrote on stderr (all of it goes to this stderr with TCCL_TEST_VERBOSE=1). */
  stderr = '';
  /** The child's first `ready` (or `connectError`) event. */
  readonly ready: Promise<PeerEvent>;
  readonly exited: Promise<number | null>;
  private nextId = 1;
  /** How far next() has read `events`. */
  private cursor = 0;
  private readonly waiters = new Map<number, (e: PeerEvent) => void>();

  /** `script`: relative to the repository root or absolute. */
  constructor(readonly script: string, options: SpawnOptions = {}) {
    super();
    const argv = [process.execPath, '--import', 'tsx', path.resolve(ROOT, script), ...(options.argv ?? [])];
    const [cmd, ...args] = [...(options.prefix ?? []), ...argv];
    this.child = spawn(cmd, args, {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, TCCL_LOG_LEVEL: process.env.TCCL_TEST_LOG_LEVEL ?? 'warn', ...options.env },
    });
    this.child.stdin!.on('error', () => undefined); // a child that died: its requests answer through `exited`
    this.child.stderr!.on('data', (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-STDERR_KEEP);
      if (process.env.TCCL_TEST_VERBOSE) process.stderr.write(d);
    });
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
    readline.createInterface({ input: this.child.stdout! }).on('line', (line) => this.onLine(line));
    this.ready = new Promise((resolve, reject) => {
      const on = (e: PeerEvent) => {
        if (e.ev === 'ready' || e.ev === 'connectError') {
          this.off('event', on);
          resolve(e);
        }
      };
      this.on('event', on);
      void this.exited.then((code) => reject(new Error(`${this.script} exited (${code}) before it was ready: ${this.stderr}`)));
    });
    this.ready.catch(() => undefined);
  }

  get pid(): number {
    return this.child.pid!;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  private onLine(line: string): void {
    let e: PeerEvent;
    try {
      e = JSON.parse(line) as PeerEvent;
    } catch {
      return; // not ours (a library printing on stdout)
    }
    this.events.push(e);
    this.emit('event', e);
    if (e.ev === 'reply' && e.id !== undefined) {
      const w = this.waiters.get(e.id);
      this.waiters.delete(e.id);
      w?.(e);
    }
  }

  /**
   * Sends a command and resolves with its reply. A child that exits (often on purpose) answers
   * `{ ok: false, exited: true }`; `timeoutMs` rejects when no reply came in time.
   */
  request(cmd: string, args: object = {}, timeoutMs?: number): Promise<PeerEvent> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = timeoutMs === undefined ? undefined : setTimeout(() => {
        if (this.waiters.delete(id)) reject(new Error(`${this.script} (pid ${this.child.pid}) did not answer ${cmd} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.set(id, (e) => {
        if (timer) clearTimeout(timer);
        resolve(e);
      });
      void this.exited.then((code) => {
        if (!this.waiters.delete(id)) return;
        if (timer) clearTimeout(timer);
        resolve({ ev: 'reply', id, ok: false, exited: true, code, message: `${this.script} exited before answering ${cmd}` });
      });
      if (this.alive) this.child.stdin!.write(JSON.stringify({ ...args, id, cmd }) + '\n');
    });
  }

  /**
   * The next event `match` accepts, in the order the child printed them: each call consumes events up to the one
   * it returns, so a loop of next() sees every match once. Resolves undefined when the child exits first.
   */
  async next(match: (e: PeerEvent) => boolean = () => true, timeoutMs = 60_000): Promise<PeerEvent | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      while (this.cursor < this.events.length) {
        const e = this.events[this.cursor++];
        if (match(e)) return e;
      }
      if (!this.alive) return undefined;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.script} (pid ${this.child.pid}) printed no matching event within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.off('event', done);
          resolve();
        };
        const timer = setTimeout(done, left);
        this.on('event', done);
        void this.exited.then(done);
      });
    }
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.alive) this.child.kill(signal);
  }

  /** Ends the child: closes its stdin (the runner exits cleanly), then kills it if it is still there. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.alive) return;
    this.child.kill('SIGCONT'); // a stopped child cannot exit
    this.child.stdin!.end();
    const t = setTimeout(() => this.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(t);
  }
}

/** Stops every process (in parallel). */
export async function stopAll(procs: Iterable<{ stop(): Promise<void> }>): Promise<void> {
  await Promise.all([...procs].map((p) => p.stop()));
}

/** Polls `cond` every 20 ms until it is true or `ms` passed. */
export async function waitFor(cond: () => boolean | Promise<boolean>, ms = 20_000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** `n` ports free on 127.0.0.1 right now (listened on and closed again), for processes told their port up front. */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () => new Promise<net.Server>((resolve) => {
      const s = net.createServer();
      s.listen(0, '127.0.0.1', () => resolve(s));
    })),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}
