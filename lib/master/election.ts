/**
 * Automatic fail-over without split brain: masters of one run campaign in an etcd election (npm `etcd3`, a lease
 * with a TTL kept alive while the process runs). Only the elected master serves peers; the others are standbys
 * that answer `error { code: 'NOT_LEADER' }`, so a peer tries the next master of its list. When the leader dies,
 * its lease expires after `ttlS` seconds and a standby is elected; it rebuilds the groups from the peers'
 * reports like a restarted master (resume.ts). A master that loses its lease (etcd unreachable, or the process
 * was frozen past the TTL) stops serving at once and says so: another master may lead the run by then.
 *
 * @example
 * ```ts
 * const master = new Master({ host: '0.0.0.0', port: 48148, token });
 * await master.listen();
 * const leadership = await EtcdLeadership.start(master, { endpoints: 'http://10.0.0.9:2379' }, (err) => {
 *   console.error(err.message); // lost the lease: the master has stopped serving
 *   process.exit(3);
 * });
 * ```
 */
import { LogFormat, Logger, LogLevel } from '../log';
import type { Master } from './master';

export interface EtcdOptions {
  /** etcd endpoints, `http://host:2379`, comma-separated or an array. */
  endpoints: string | string[];
  /** Election name: masters of one run share it (default 'tccl-master'). */
  name?: string;
  /** Lease TTL, seconds (default 5): how long a dead leader blocks the standbys. */
  ttlS?: number;
  /** Log level and format of the election's lines (as the master's). */
  logLevel?: LogLevel;
  logFormat?: LogFormat;
}

/** The election a master takes part in. */
export class EtcdLeadership {
  private leader = false;
  private closed = false;

  private constructor(
    private readonly master: Master,
    private readonly client: import('etcd3').Etcd3,
    private readonly campaign: import('etcd3').Campaign,
  ) {}

  /**
   * Puts `master` (already listening) in standby and campaigns; it serves once elected. `onLost` is called once
   * if the campaign fails (the lease was lost or etcd is unreachable): by then the master has stopped serving.
   */
  static async start(master: Master, options: EtcdOptions, onLost: (err: Error) => void): Promise<EtcdLeadership> {
    const hosts = (typeof options.endpoints === 'string' ? options.endpoints.split(',') : options.endpoints).map((h) => h.trim()).filter(Boolean);
    if (hosts.length === 0 || hosts.some((h) => !/^https?:\/\/[^/\s]+$/.test(h))) {
      throw new TypeError(`Expected etcd endpoints as "http://host:2379" (comma-separated for several), got ${JSON.stringify(options.endpoints)}`);
    }
    const ttl = options.ttlS ?? 5;
    if (!Number.isInteger(ttl) || ttl < 1 || ttl > 3600) throw new TypeError(`Expected the etcd lease TTL in whole seconds from 1 to 3600, got ${ttl}`);
    const { Etcd3 } = await import('etcd3');
    const log = new Logger('master', options.logLevel, 'info', undefined, options.logFormat);
    master.setServing(false, 'a standby: another master leads the run (etcd election); try the next master of the list');
    const client = new Etcd3({ hosts, dialTimeout: 5000 });
    const campaign = client.election(options.name ?? 'tccl-master', ttl).campaign(master.address);
    const l = new EtcdLeadership(master, client, campaign);
    log.info('campaigning for leadership (etcd)', { etcd: hosts.join(','), ttlS: ttl, election: options.name ?? 'tccl-master' });
    campaign.on('elected', () => {
      l.leader = true;
      log.warn('elected leader (etcd): serving peers', { address: master.address });
      master.setServing(true);
    });
    campaign.on('error', (err: Error) => {
      if (l.closed) return;
      const was = l.leader;
      l.leader = false;
      master.setServing(false, 'this master lost its etcd lease and stopped serving');
      const e = new Error(
        was
          ? `This master lost its etcd lease (${err.message}): another master may lead the run now, so it stopped serving`
          : `This master's etcd campaign failed (${err.message}): it stopped (it was a standby)`,
        { cause: err },
      );
      log.error(was ? 'lost the etcd lease: stopped serving' : 'etcd campaign failed', { err: e.message });
      void l.close().then(() => onLost(e));
    });
    return l;
  }

  /** Whether this master is the elected leader now. */
  get isLeader(): boolean {
    return this.leader;
  }

  /** Resigns (a standby takes over at once) and closes the etcd client. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.campaign.resign().catch(() => undefined);
    this.client.close();
  }
}
