// A hand-driven control connection for the security tests: the moves of a stranger or a forger, frame by frame.
import * as net from 'node:net';
import { ClientKeyExchange, Connection, PROTOCOL_VERSION, makeNonce } from '../../lib/protocol';

export class RawClient {
  readonly conn: Connection;
  readonly nonce = makeNonce();
  readonly messages: Record<string, unknown>[] = [];
  readonly closed: Promise<Error | undefined>;
  private waiters: (() => void)[] = [];

  constructor(port: number, host = '127.0.0.1', localAddress?: string) {
    this.conn = new Connection(net.connect({ host, port, localAddress }));
    this.conn.socket.on('error', () => undefined);
    this.conn.on('message', (m) => {
      this.messages.push(m);
      for (const w of this.waiters.splice(0)) w();
    });
    this.closed = new Promise((resolve) => this.conn.on('close', (r) => {
      for (const w of this.waiters.splice(0)) w();
      resolve(r);
    }));
  }

  connected(): Promise<void> {
    return new Promise((resolve, reject) => {
      if (!this.conn.socket.connecting) return resolve();
      this.conn.socket.once('connect', () => resolve());
      this.conn.socket.once('error', reject);
    });
  }

  send(m: Record<string, unknown>): void {
    this.conn.send(m as never);
  }

  /** The next message of type `t` (or any error), within `ms`; undefined when the connection closed first. */
  async next(t: string, ms = 8000): Promise<Record<string, unknown> | undefined> {
    const deadline = Date.now() + ms;
    for (;;) {
      const i = this.messages.findIndex((m) => m.t === t || m.t === 'error');
      if (i >= 0) return this.messages.splice(i, 1)[0];
      if (this.conn.isClosed) return undefined;
      if (Date.now() > deadline) throw new Error(`no "${t}" within ${ms} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 100);
        this.waiters.push(() => { clearTimeout(timer); resolve(); });
      });
    }
  }

  /** hello -> challenge; returns the master's nonce. */
  async hello(extra: Record<string, unknown> = {}): Promise<Buffer> {
    await this.connected();
    this.send({ t: 'hello', proto: 'tccl', version: PROTOCOL_VERSION, nonce: this.nonce, ...extra });
    const c = await this.next('challenge');
    if (!c || c.t !== 'challenge') throw new Error(`expected a challenge, got ${JSON.stringify(c)}`);
    return Buffer.from(c.nonce as Uint8Array);
  }

  /**
   * The key exchange with `token` (lib/protocol/secure.ts): resolves with the master's answer (`kx`, then every
   * later frame is sealed; or an error).
   */
  async keyExchange(token: string, masterNonce: Buffer): Promise<Record<string, unknown> | undefined> {
    const kx = new ClientKeyExchange(token, this.nonce);
    this.send(kx.offer(masterNonce));
    const m = await this.next('kx');
    if (m?.t === 'kx') this.conn.secure(kx.finish(m as { pub: Uint8Array; proof: Uint8Array }));
    return m;
  }

  /** hello, then the key exchange with `token`; throws unless the master answered with its `kx`. */
  async authenticate(token: string, hello: Record<string, unknown> = {}): Promise<void> {
    const m = await this.keyExchange(token, await this.hello(hello));
    if (m?.t !== 'kx') throw new Error(`expected the master's kx, got ${JSON.stringify(m)}`);
  }

  close(): void {
    this.conn.close();
  }
}
