/**
 * The master's half of `tccl check` (lib/cli/check.ts): a worker host asks, before it trains, whether the other
 * peers can reach its data port. The master dials the port back itself and asks every member of the worker's
 * group to do the same (`probe`), each sending a short burst of bytes so the worker can estimate bandwidth; the
 * members answer `probeDone` and the master reports everything in one `checkResult`. Checks are rare and
 * bounded: a few at a time, one at a time per source address, at most {@link CHECKS_PER_MINUTE} a minute, every
 * dial and every answer under a deadline, bursts capped in size. Who may aim the bursts where: on a master with a
 * run token only a token holder can check (the handshake), and it may name another address to probe
 * (`advertiseAddress`, for a worker behind NAT); on a master without a token the target is always the address the
 * check comes from, so nobody can make the members send bursts to a third party.
 */
import * as net from 'node:net';
import type { Logger } from '../log';
import type { Check, CheckedMember, Connection, MasterMsg, Msg } from '../protocol';
import { probeHeader } from '../protocol/probe';
import type { PeerView } from './coordinator';
import { nativePeerId } from './context';
import { monotonicMs } from '../clock';

/** At most this many checks run at once; more are refused with BUSY. */
const MAX_CHECKS = 4;
/** Checks started per minute at most, over every source (each makes every member send a burst). */
export const CHECKS_PER_MINUTE = 12;
/** How long a member has to dial, send its burst and answer. */
const PROBE_TIMEOUT_MS = 15_000;
/** How long the master's own dial-back may take to connect. */
const DIAL_TIMEOUT_MS = 5000;
/** The master's own burst is capped lower than the members' (it may serve many checks). */
const MASTER_BURST_MAX = 8 << 20;

export interface CheckHost {
  /** Members of a group, in ring order (none for an unknown group). */
  members(group: number): PeerView[];
  send(peer: string, msg: MasterMsg): void;
  log: Logger;
  /** Whether the run has a token (a check then comes from a token holder, who may name the address to probe). */
  auth: boolean;
}

export class Checks {
  private running = 0;
  private readonly sources = new Set<string>();
  private started: number[] = [];
  private nextProbe = 1;
  private readonly probes = new Map<number, { peer: string; done: (ok: boolean, message: string) => void }>();

  constructor(private readonly host: CheckHost) {}

  /** A member answered a probe. */
  onProbeDone(peer: string, m: Msg<'probeDone'>): void {
    const p = this.probes.get(m.id);
    if (p && p.peer === peer) p.done(m.ok, m.message ?? '');
  }

  /** Runs one check for a connection that sent `check` (its proof already verified), then closes it. */
  /** Runs a check; a failure of its own is answered INTERNAL. */
  start(conn: Connection, m: Check): void {
    this.run(conn, m).catch((err: Error) => {
      this.host.log.error('tccl check failed', { from: conn.remoteAddress, err });
      conn.sendAndClose({ t: 'error', code: 'INTERNAL', message: `the check failed on the master: ${err.message}` });
    });
  }

  async run(conn: Connection, m: Check): Promise<void> {
    if (this.running >= MAX_CHECKS) {
      conn.sendAndClose({ t: 'error', code: 'BUSY', message: `${MAX_CHECKS} checks are already running on this master; try again in a few seconds` });
      return;
    }
    const source = conn.remoteAddress;
    if (this.sources.has(source)) {
      conn.sendAndClose({ t: 'error', code: 'BUSY', message: `a check from ${source} is already running; wait for it to finish` });
      return;
    }
    const now = monotonicMs();
    this.started = this.started.filter((at) => now - at < 60_000);
    if (this.started.length >= CHECKS_PER_MINUTE) {
      this.host.log.warn('refused a check: rate limit', { from: source, perMinute: CHECKS_PER_MINUTE });
      conn.sendAndClose({ t: 'error', code: 'BUSY', message: `${CHECKS_PER_MINUTE} checks ran on this master in the last minute; try again in a minute` });
      return;
    }
    if (!this.host.auth && m.advertiseAddress && m.advertiseAddress !== source) {
      this.host.log.warn('refused a check of another address', { from: source, target: m.advertiseAddress });
      conn.sendAndClose({
        t: 'error', code: 'CHECK_REFUSED',
        message: `this master has no run token, so a check probes only the address it comes from (${source}), not ${m.advertiseAddress}: run tccl check on that host, or give the master a token`,
      });
      return;
    }
    this.started.push(now);
    this.sources.add(source);
    this.running++;
    try {
      const host = m.advertiseAddress || source;
      const members = this.host.members(m.peerGroup);
      this.host.log.info('tccl check', { from: conn.remoteAddress, target: `${host}:${m.port}`, group: m.peerGroup, members: members.length });
      const [dial, ...results] = await Promise.all([
        dialBack(host, m.port, m.nonce, Math.min(m.probeBytes, MASTER_BURST_MAX)),
        ...members.map((p) => this.probe(p, host, m)),
      ]);
      conn.sendAndClose({
        t: 'checkResult', observedHost: conn.remoteAddress, dialBack: dial.ok, dialBackMs: dial.ms, dialBackError: dial.error, members: results,
      });
    } finally {
      this.running--;
      this.sources.delete(source);
    }
  }

  private probe(p: PeerView, host: string, m: Check): Promise<CheckedMember> {
    const id = this.nextProbe++;
    const base = { id: nativePeerId(p), label: p.label ?? '', host: p.host, port: p.port };
    return new Promise<CheckedMember>((resolve) => {
      const timer = setTimeout(() => done(false, `no answer within ${PROBE_TIMEOUT_MS} ms (an older TCCL version, or a busy event loop)`), PROBE_TIMEOUT_MS);
      const done = (ok: boolean, message: string) => {
        clearTimeout(timer);
        this.probes.delete(id);
        resolve({ ...base, ok, message });
      };
      this.probes.set(id, { peer: p.id, done });
      this.host.send(p.id, { t: 'probe', id, host, port: m.port, nonce: m.nonce, bytes: m.probeBytes });
    });
  }
}

/** Connects to the checker's port, says who it is and sends a burst of `bytes`; resolves once connected (or not). */
function dialBack(host: string, port: number, nonce: Uint8Array, bytes: number): Promise<{ ok: boolean; ms: number; error?: string }> {
  const t0 = monotonicMs();
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ ok: false, ms: Math.round(monotonicMs() - t0), error: `connecting to ${host}:${port} timed out after ${DIAL_TIMEOUT_MS} ms (a firewall dropping packets?)` });
    }, DIAL_TIMEOUT_MS);
    socket.on('error', (err) => {
      clearTimeout(timer);
      resolve({ ok: false, ms: Math.round(monotonicMs() - t0), error: `connecting to ${host}:${port} failed: ${err.message}` });
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve({ ok: true, ms: Math.round(monotonicMs() - t0) });
      socket.write(probeHeader(nonce, 'master'));
      socket.end(Buffer.alloc(bytes));
      socket.setTimeout(PROBE_TIMEOUT_MS, () => socket.destroy());
    });
  });
}
