/**
 * Measures the WAN emulator itself with bulk C++ traffic (bench/wan/wanblast.cpp): a direct loopback baseline,
 * the emulator unshaped, and shaped links, with the emulator's CPU time per GB forwarded.
 * Used by bench/wan/run.ts (section "emulator") and runnable alone: `npx tsx bench/wan/selftest.ts`.
 */
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { buildTool, LinkSpec, WanEmulator } from '../../test/harness/wan/emulator';

export interface BlastResult {
  label: string;
  conns: number;
  mbps: number;
  minConnMbps: number;
  maxConnMbps: number;
  seconds: number;
  /** Emulator CPU seconds per second of transfer (1.0 = one full core); absent for the direct baseline. */
  emulatorCpu?: number;
  /** Emulator CPU ms per GB forwarded. */
  emulatorCpuMsPerGB?: number;
}

function startSink(bin: string, host: string, conns: number): Promise<{ port: number; done: Promise<number[]> }> {
  return new Promise((resolve, reject) => {
    const p = spawn(bin, ['sink', host, String(conns)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    let resolvedPort = false;
    const done = new Promise<number[]>((res, rej) => {
      p.on('exit', (code) => {
        const m = /result (\S+) (\S+) (\S+) (\S+)/.exec(out);
        if (code !== 0 || !m) rej(new Error(`wanblast sink failed (${code}): ${out}`));
        else res(m.slice(1).map(Number));
      });
    });
    p.stdout.setEncoding('utf8');
    p.stdout.on('data', (d: string) => {
      out += d;
      const m = /port (\d+)/.exec(out);
      if (m && !resolvedPort) {
        resolvedPort = true;
        resolve({ port: Number(m[1]), done });
      }
    });
    p.on('error', reject);
  });
}

function runSender(bin: string, host: string, port: number, conns: number, seconds: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(bin, ['send', host, String(port), String(conns), String(seconds)], { stdio: 'inherit' });
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`wanblast send failed (${code})`))));
  });
}

/** One bulk transfer: K connections for `seconds`, directly or through a route with `link` both ways. */
async function blastOne(
  idx: number,
  conns: number,
  seconds: number,
  link: LinkSpec | null,
  emu?: WanEmulator,
): Promise<{ bytes: number; secs: number; minB: number; maxB: number }> {
  const bin = buildTool(path.join(__dirname, 'wanblast.cpp'));
  const sinkHost = `127.0.21.${idx + 1}`;
  const sink = await startSink(bin, sinkHost, conns);
  let host = sinkHost;
  let port = sink.port;
  let routeId = -1;
  if (link && emu) {
    await emu.setLink(901 + 2 * idx, link);
    await emu.setLink(902 + 2 * idx, link);
    const r = await emu.addRoute({
      listenHost: `127.0.11.${idx + 1}`,
      targetHost: sinkHost,
      targetPort: sink.port,
      fwdLink: 901 + 2 * idx,
      revLink: 902 + 2 * idx,
    });
    host = `127.0.11.${idx + 1}`;
    port = r.port;
    routeId = r.id;
  }
  await runSender(bin, host, port, conns, seconds);
  const [bytes, secs, minB, maxB] = await sink.done;
  if (emu && routeId >= 0) await emu.removeRoute(routeId);
  return { bytes, secs, minB, maxB };
}

/** `links` transfers at once (each over its own link), K connections each; rates are per link (mean). */
export async function blast(
  label: string,
  conns: number,
  seconds: number,
  link: LinkSpec | null,
  emu?: WanEmulator,
  links = 1,
): Promise<BlastResult> {
  const before = emu ? await emu.stats() : undefined;
  const t0 = process.hrtime.bigint();
  const rs = await Promise.all(Array.from({ length: links }, (_, i) => blastOne(i, conns, seconds, link, emu)));
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const after = emu ? await emu.stats() : undefined;
  const bytes = rs.reduce((a, r) => a + r.bytes, 0);
  const secs = rs.reduce((a, r) => a + r.secs, 0) / rs.length;
  const res: BlastResult = {
    label,
    conns,
    mbps: (bytes * 8) / secs / 1e6 / links,
    minConnMbps: Math.min(...rs.map((r) => (r.minB * 8) / r.secs / 1e6)),
    maxConnMbps: Math.max(...rs.map((r) => (r.maxB * 8) / r.secs / 1e6)),
    seconds: secs,
  };
  if (before && after) {
    const cpuMs = after.utimeMs + after.stimeMs - before.utimeMs - before.stimeMs;
    res.emulatorCpu = cpuMs / 1000 / wall;
    res.emulatorCpuMsPerGB = cpuMs / (bytes / 1e9);
  }
  return res;
}

/** The emulator's own figures: baseline, unshaped, and shaped to the bench's link settings. */
export async function selfTest(seconds = 3, log: (s: string) => void = console.log): Promise<BlastResult[]> {
  const emu = await WanEmulator.start();
  const out: BlastResult[] = [];
  const show = (r: BlastResult, links = 1) => {
    out.push(r);
    log(
      `${r.label.padEnd(50)} K=${String(r.conns).padStart(2)}  ${r.mbps.toFixed(0).padStart(6)} Mbit/s${links > 1 ? ' per link' : ''}` +
        `  per conn ${r.minConnMbps.toFixed(0)}-${r.maxConnMbps.toFixed(0)}` +
        (r.emulatorCpu !== undefined ? `  emulator CPU ${(r.emulatorCpu * 100).toFixed(0)}% of a core (${r.emulatorCpuMsPerGB!.toFixed(0)} ms/GB)` : ''),
    );
  };
  const wan: LinkSpec = { delayMs: 20, connMbps: 100, aggMbps: 1000 };
  try {
    show(await blast('direct loopback (no emulator)', 4, seconds, null));
    show(await blast('emulator, unshaped (0 ms, no caps)', 4, seconds, { delayMs: 0 }, emu));
    for (const k of [1, 4, 16]) show(await blast('emulator, 20 ms one-way, 100/conn, 1000/link', k, seconds, wan, emu));
    show(await blast('emulator, same, 4 links at once', 16, seconds, wan, emu, 4), 4);
  } finally {
    await emu.close();
  }
  return out;
}

if (require.main === module) {
  selfTest(Number(process.argv[2] ?? 3)).catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
