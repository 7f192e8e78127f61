/**
 * Node driver of the user-space WAN emulator (wanproxy.cpp next to this file), shared by the tests and the WAN
 * benchmark (bench/wan): builds the executable when needed,
 * spawns it, and sends it line commands. Linux only (epoll, timerfd, signalfd; several 127.x.y.z addresses).
 *
 * Model: a *link* is one direction between two hosts, with a one-way delay, a cap per TCP connection and an
 * aggregate cap; K connections over a link get about min(K x connMbps, aggMbps). A *route* is a listener on
 * an emulated address that forwards each connection to a real address; client->server bytes travel over its
 * forward link, server->client bytes over its reverse link.
 */
import { ChildProcessWithoutNullStreams, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Where the C++ tools are built (ignored by git). */
export const WAN_BUILD_DIR = path.join(__dirname, '..', '..', '..', 'build', 'wan');

export interface LinkSpec {
  /** One-way delay in ms (RTT over a link pair = the two delays). */
  delayMs: number;
  /** Cap per TCP connection in Mbit/s (0 or undefined = none). */
  connMbps?: number;
  /** Aggregate cap of the link in Mbit/s (0 or undefined = none). */
  aggMbps?: number;
  /** Shared caps (see setShared) this link's bytes also draw on, e.g. the source's uplink. */
  shared?: number[];
}

export interface RouteSpec {
  /** Route id (default: the next free one). */
  id?: number;
  listenHost: string;
  /** 0 (default) = any free port. */
  listenPort?: number;
  targetHost: string;
  /** 0 = the port the route listens on (so a process can bind targetHost on the port it will advertise). */
  targetPort: number;
  /** Link for client -> server bytes. */
  fwdLink: number;
  /** Link for server -> client bytes. */
  revLink: number;
}

export interface WanStats {
  /** CPU time the emulator has used so far. */
  utimeMs: number;
  stimeMs: number;
  maxRssKb: number;
  accepted: number;
  open: number;
  queuedBytes: number;
  links: Record<string, { bytes: number; connections: number }>;
  routes: Record<string, { port: number; accepted: number; open: number }>;
  /** Open connections: [route id, client -> server bytes forwarded so far]. */
  connections: Array<[number, number]>;
}

/** Compiles a single-file C++ tool (g++ -O2) unless an up-to-date build exists; returns the executable's path. */
export function buildTool(src: string): string {
  if (process.platform !== 'linux') throw new Error('The WAN emulator needs Linux (epoll, timerfd, 127.x.y.z loopback addresses)');
  const out = path.join(WAN_BUILD_DIR, path.basename(src, '.cpp'));
  const fresh = fs.existsSync(out) && fs.statSync(out).mtimeMs >= fs.statSync(src).mtimeMs;
  if (!fresh) {
    fs.mkdirSync(WAN_BUILD_DIR, { recursive: true });
    const cxx = process.env.CXX || 'g++';
    // Build to a temporary name and rename, so concurrent test files never run a half-written executable.
    const tmp = `${out}.${process.pid}.tmp`;
    execFileSync(cxx, ['-O2', '-std=c++17', '-Wall', '-pthread', '-o', tmp, src], { stdio: 'inherit' });
    fs.renameSync(tmp, out);
  }
  return out;
}

/** One running emulator process. */
export class WanEmulator {
  private readonly proc: ChildProcessWithoutNullStreams;
  private readonly waiters: Array<{ resolve: (line: string) => void; reject: (e: Error) => void }> = [];
  private buf = '';
  private nextRoute = 1;
  private exited: Promise<number | null>;
  private exitCode: number | null | undefined;
  private stderr = '';

  private constructor(proc: ChildProcessWithoutNullStreams) {
    this.proc = proc;
    this.exited = new Promise((resolve) => {
      proc.on('exit', (code) => {
        this.exitCode = code;
        const err = new Error(`wanproxy exited (code ${code}) ${this.stderr.trim()}`);
        for (const w of this.waiters.splice(0)) w.reject(err);
        resolve(code);
      });
    });
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', (d: string) => {
      this.buf += d;
      let i;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        const w = this.waiters.shift();
        if (w) w.resolve(line);
      }
    });
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (d: string) => {
      this.stderr += d;
    });
    proc.stdin.on('error', () => {});
  }

  /** Builds (if needed) and starts the emulator; resolves once it is ready for commands. */
  static async start(): Promise<WanEmulator> {
    const bin = buildTool(path.join(__dirname, 'wanproxy.cpp'));
    const proc = spawn(bin, [], { stdio: ['pipe', 'pipe', 'pipe'] });
    const emu = new WanEmulator(proc);
    const first = await emu.next();
    if (first !== 'ready') throw new Error(`wanproxy did not start: ${first}`);
    return emu;
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  private next(): Promise<string> {
    if (this.exitCode !== undefined) return Promise.reject(new Error('wanproxy has exited'));
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** Sends one command line and returns its reply line; rejects on "error ...". */
  async command(line: string): Promise<string> {
    const p = this.next();
    this.proc.stdin.write(line + '\n');
    const reply = await p;
    if (reply.startsWith('error')) throw new Error(`wanproxy: ${reply.slice(6)} (command: ${line})`);
    return reply;
  }

  /** Defines or updates a directed link; existing connections pick up the new caps at once. */
  async setLink(id: number, spec: LinkSpec): Promise<void> {
    await this.command(`link ${id} ${spec.delayMs} ${spec.connMbps ?? 0} ${spec.aggMbps ?? 0} ${(spec.shared ?? []).join(' ')}`.trim());
  }

  /** Defines or updates a cap shared by several links (e.g. a host's uplink), Mbit/s (0 = none). */
  async setShared(id: number, mbps: number): Promise<void> {
    await this.command(`shared ${id} ${mbps}`);
  }

  /** Opens a route; returns its id and the port it listens on. */
  async addRoute(spec: RouteSpec): Promise<{ id: number; port: number }> {
    const id = spec.id ?? this.nextRoute;
    this.nextRoute = Math.max(this.nextRoute, id + 1);
    const reply = await this.command(
      `route ${id} ${spec.listenHost} ${spec.listenPort ?? 0} ${spec.targetHost} ${spec.targetPort} ${spec.fwdLink} ${spec.revLink}`,
    );
    return { id, port: Number(reply.split(' ')[3]) };
  }

  /**
   * Connections to route `id` from client address `sourceHost` use links `fwdLink` / `revLink` instead of the
   * route's own: per-pair links behind one advertised address, for peers that dial from their own address
   * (the `sourceAddress` option of the engine and the Communicator).
   */
  async via(id: number, sourceHost: string, fwdLink: number, revLink: number): Promise<void> {
    await this.command(`via ${id} ${sourceHost} ${fwdLink} ${revLink}`);
  }

  /** Closes a route's listener and resets its connections. */
  async removeRoute(id: number): Promise<void> {
    await this.command(`unroute ${id}`);
  }

  /** Resets every connection of a route (a link cut); the route keeps listening. */
  async cut(id: number): Promise<void> {
    await this.command(`cut ${id}`);
  }

  async stats(): Promise<WanStats> {
    const reply = await this.command('stats');
    return JSON.parse(reply.slice(6)) as WanStats;
  }

  /** Stops the emulator (closing every connection) and waits for it to exit; returns its exit code. */
  async close(timeoutMs = 5000): Promise<number | null> {
    if (this.exitCode !== undefined) return this.exitCode;
    this.proc.stdin.end('quit\n');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Address plan: peer i has a real address and an emulated one; distinct 127.x.y.z loopback addresses. */
export function realHost(i: number, block = 20): string {
  return `127.0.${block}.${i + 1}`;
}
export function emulatedHost(i: number, block = 10): string {
  return `127.0.${block}.${i + 1}`;
}

/** Link id of the direction src -> dst among n hosts. */
export function linkId(src: number, dst: number, n: number): number {
  return 1 + src * n + dst;
}

/** Shared-cap ids of host i's uplink and downlink in a WanMesh. */
export const uplinkId = (i: number) => 10_000 + i;
export const downlinkId = (i: number) => 20_000 + i;

/**
 * A full mesh among n hosts: a link per ordered pair, and a route per ordered pair (i dials j), so that what
 * host i sends to host j crosses link i->j whichever side dialled. `addresses[i][j]` is where host i must dial
 * host j: the emulated address of j, on the port of route i->j.
 */
export class WanMesh {
  readonly addresses: Array<Array<{ host: string; port: number }>>;
  readonly routeIds: number[][];

  private constructor(
    readonly emu: WanEmulator,
    readonly n: number,
    addresses: Array<Array<{ host: string; port: number }>>,
    routeIds: number[][],
  ) {
    this.addresses = addresses;
    this.routeIds = routeIds;
  }

  /**
   * `targets[j]` is the real address host j listens on. Every link gets `link` (or `linkFor(src, dst)`).
   * With `hostMbps`, every host also has an uplink and a downlink of that capacity shared by all its links
   * (shared caps `uplinkId(i)` and `downlinkId(i)`), so an algorithm that talks to all peers at once gets no more
   * per host than a ring.
   */
  static async create(
    emu: WanEmulator,
    targets: Array<{ host: string; port: number }>,
    link: LinkSpec | ((src: number, dst: number) => LinkSpec),
    options: { emulatedHostOf?: (i: number) => string; hostMbps?: number } = {},
  ): Promise<WanMesh> {
    const n = targets.length;
    const emulatedHostOf = options.emulatedHostOf ?? ((i: number) => emulatedHost(i));
    const spec = typeof link === 'function' ? link : () => link;
    if (options.hostMbps !== undefined) {
      for (let i = 0; i < n; i++) {
        await emu.setShared(uplinkId(i), options.hostMbps);
        await emu.setShared(downlinkId(i), options.hostMbps);
      }
    }
    for (let s = 0; s < n; s++) {
      for (let d = 0; d < n; d++) {
        if (s === d) continue;
        const l = spec(s, d);
        const shared = options.hostMbps !== undefined ? [...(l.shared ?? []), uplinkId(s), downlinkId(d)] : l.shared;
        await emu.setLink(linkId(s, d, n), { ...l, shared });
      }
    }
    const addresses: Array<Array<{ host: string; port: number }>> = [];
    const routeIds: number[][] = [];
    for (let s = 0; s < n; s++) {
      addresses.push([]);
      routeIds.push([]);
      for (let d = 0; d < n; d++) {
        if (s === d) {
          addresses[s].push(targets[s]);
          routeIds[s].push(-1);
          continue;
        }
        const r = await emu.addRoute({
          listenHost: emulatedHostOf(d),
          targetHost: targets[d].host,
          targetPort: targets[d].port,
          fwdLink: linkId(s, d, n),
          revLink: linkId(d, s, n),
        });
        addresses[s].push({ host: emulatedHostOf(d), port: r.port });
        routeIds[s].push(r.id);
      }
    }
    return new WanMesh(emu, n, addresses, routeIds);
  }

  /** Closes the mesh's routes (and resets their connections); the links stay defined. */
  async close(): Promise<void> {
    for (const row of this.routeIds) for (const id of row) if (id >= 0) await this.emu.removeRoute(id);
  }

}
