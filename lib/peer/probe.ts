/**
 * A member's part in `tccl check` (lib/master/check.ts): asked by the master, it dials the checking host's port,
 * sends a short burst there, and answers whether it could. One probe at a time; each under a deadline.
 */
import * as net from 'node:net';
import type { Msg, PeerMsg } from '../protocol';
import { probeHeader } from '../protocol/probe';

const PROBE_TIMEOUT_MS = 10_000;

export class Prober {
  private busy = false;

  constructor(private readonly send: (m: PeerMsg) => void, private readonly id: () => string) {}

  onProbe(m: Msg<'probe'>): void {
    if (this.busy) {
      this.send({ t: 'probeDone', id: m.id, ok: false, message: 'this member is already probing another host' });
      return;
    }
    this.busy = true;
    void burst(m, this.id()).then((r) => {
      this.busy = false;
      this.send({ t: 'probeDone', id: m.id, ...r });
    });
  }
}

function burst(m: Msg<'probe'>, sender: string): Promise<{ ok: boolean; message?: string }> {
  const where = `${m.host}:${m.port}`;
  return new Promise((resolve) => {
    const socket = net.connect({ host: m.host, port: m.port });
    let connected = false;
    const finish = (ok: boolean, message?: string) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ ok, message: message?.slice(0, 4000) });
    };
    const timer = setTimeout(
      () => finish(false, connected ? `sending ${m.bytes} bytes to ${where} took over ${PROBE_TIMEOUT_MS} ms` : `connecting to ${where} timed out after ${PROBE_TIMEOUT_MS} ms`),
      PROBE_TIMEOUT_MS,
    );
    socket.on('error', (err) => finish(false, `${connected ? 'sending to' : 'connecting to'} ${where} failed: ${err.message}`));
    socket.once('connect', () => {
      connected = true;
      socket.write(probeHeader(m.nonce, sender));
      socket.end(Buffer.alloc(m.bytes));
    });
    // The checker closes after reading everything: then the burst has arrived.
    socket.once('close', (hadError) => {
      if (!hadError) finish(true);
    });
    socket.resume();
  });
}
