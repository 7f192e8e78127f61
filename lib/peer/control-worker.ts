/**
 * The worker thread that holds a peer's control connections to the master (started by control-thread.ts). It
 * owns the sockets, the framing and the heartbeats, so a peer whose JavaScript thread is busy (a long
 * synchronous training step) keeps answering the master; it forwards every other message to the main thread
 * and writes the frames the main thread encoded. It also watches the main thread's ticks: each heartbeat says
 * for how long the main thread has been silent (`busy`), and the master decides when that is a hang
 * (docs/master.md, "Liveness"). Nothing here decides membership or reads a message other than `hb`.
 */
import * as net from 'node:net';
import { MessagePort, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { IntegrityError, ProtocolError } from '../errors';
import { Connection } from '../protocol/connection';
import type { PeerStats } from '../protocol/stats';
import { ToMain, ToWorker, busyAfterMs } from './control-thread';

function serve(port: MessagePort, forwarded: Int32Array): void {
  const links = new Map<number, Connection>();
  let stats: Partial<PeerStats> | undefined;
  // performance.now() is monotonic and this thread's own: ticks are timed on arrival, never compared across threads.
  let lastTick = performance.now();
  const post = (m: ToMain) => port.postMessage(m);

  const open = (id: number, host: string, portNumber: number) => {
    let conn: Connection;
    try {
      conn = new Connection(net.connect({ host, port: portNumber }));
    } catch (err) {
      post({ t: 'close', id, reason: { message: (err as Error).message, protocol: false } });
      return;
    }
    links.set(id, conn);
    conn.socket.once('connect', () => post({ t: 'connect', id }));
    conn.on('message', (msg) => {
      // Counted before it is posted, so the main thread can tell that something is on its way (control-thread.ts).
      Atomics.add(forwarded, 0, 1);
      post({ t: 'msg', id, msg });
    });
    conn.on('close', (reason) => {
      links.delete(id);
      post({ t: 'close', id, reason: reason && { message: reason.message, protocol: reason instanceof ProtocolError, integrity: reason instanceof IntegrityError } });
    });
  };

  const handle = (m: ToWorker) => {
    if (m.t === 'tick') {
      lastTick = performance.now();
      stats = m.stats;
      return;
    }
    if (m.t === 'open') return open(m.id, m.host, m.port);
    if (m.t === 'exit') {
      // The sockets still open finish their last writes (a goodbye); then this thread has nothing left and ends.
      port.close();
      return;
    }
    const conn = links.get(m.id);
    if (!conn) return;
    switch (m.t) {
      case 'send': return conn.sendFrame(m.frame);
      case 'end': return conn.sendAndClose(m.frame);
      case 'secure': return conn.secure({ tx: Buffer.from(m.tx), rx: Buffer.from(m.rx) });
      case 'close': return conn.close(m.reason === undefined ? undefined : new Error(m.reason));
      case 'heartbeat': {
        const busyAfter = busyAfterMs(m.timeoutMs);
        return conn.startHeartbeat(m.intervalMs, m.timeoutMs, undefined, () => {
          const stalled = Math.round(performance.now() - lastTick);
          return { ...(stats && { stats }), ...(stalled >= busyAfter && { busy: stalled }) };
        });
      }
    }
  };

  port.on('message', (m: ToWorker) => {
    try {
      handle(m);
    } catch (err) {
      // Nothing may end this thread: the link concerned closes, and the main thread reconnects or ends the session.
      const conn = 'id' in m ? links.get(m.id) : undefined;
      if (conn) conn.close(err as Error);
    }
  });
}

const data = workerData as { tcclControl?: boolean; forwarded?: Int32Array } | undefined;
if (!isMainThread && parentPort && data?.tcclControl && data.forwarded) serve(parentPort, data.forwarded);
