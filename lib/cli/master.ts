/**
 * `tccl master`: runs a master until SIGINT/SIGTERM, optionally with /metrics, /status and the dashboard on an
 * HTTP port. Every option maps to a MasterOptions field; a new master option is one more `.option()` here and
 * one more field in `masterOptions`.
 */
import { Command } from 'commander';
import { EtcdLeadership } from '../master/election';
import { INSECURE_WARNING, Master, MasterOptions } from '../master/master';
import { isLoopbackHost } from '../validate';
import { CliOutput, UsageError, choiceArg, intArg, readToken } from './common';

const LEVELS = ['silent', 'error', 'warn', 'info', 'debug'] as const;
const FORMATS = ['text', 'json'] as const;

interface MasterFlags {
  host: string;
  port: number;
  tokenFile?: string;
  metricsTokenFile?: string;
  insecure?: boolean;
  peerTimeoutMs?: number;
  jsHangTimeoutMs?: number;
  heartbeatMs?: number;
  voteTimeoutMs?: number;
  logLevel?: (typeof LEVELS)[number];
  logFormat?: (typeof FORMATS)[number];
  httpPort?: number;
  httpHost: string;
  resumeWindowMs?: number;
  etcd?: string;
  etcdTtl: number;
  etcdElection: string;
}

/** The Master options the flags ask for. */
export function masterOptions(f: MasterFlags): MasterOptions {
  const token = readToken(f.tokenFile);
  const metricsToken = f.metricsTokenFile === undefined ? undefined : readToken(f.metricsTokenFile);
  if (metricsToken !== undefined && metricsToken === token) {
    throw new UsageError('the metrics token is the run token: make a separate one ("tccl token --out metrics.token"), since monitoring must not hold the credential of the run');
  }
  const exposed = [f.host, ...(f.httpPort !== undefined && metricsToken === undefined ? [f.httpHost] : [])].filter((h) => !isLoopbackHost(h));
  if (token === undefined && exposed.length > 0 && !f.insecure) {
    throw new UsageError(
      `refusing to listen on ${exposed.join(' and ')} without a run token: anyone who reaches the port could join the run, evict its members and read its state. ` +
      'Give --token-file FILE (make one with "tccl token --out FILE"; or set TCCL_TOKEN), listen on --host 127.0.0.1, or accept the risk with --insecure',
    );
  }
  return {
    host: f.host,
    port: f.port,
    token,
    metricsToken,
    insecure: f.insecure,
    peerTimeoutMs: f.peerTimeoutMs,
    jsHangTimeoutMs: f.jsHangTimeoutMs,
    heartbeatIntervalMs: f.heartbeatMs,
    voteTimeoutMs: f.voteTimeoutMs,
    logLevel: f.logLevel,
    logFormat: f.logFormat,
    httpPort: f.httpPort,
    httpHost: f.httpHost,
    resumeWindowMs: f.resumeWindowMs,
  };
}

export function masterCommand(io: CliOutput): Command {
  return new Command('master')
    .description('run the coordinator of a run (it never touches tensor data)')
    .option('--host <address>', 'address to listen on', '0.0.0.0')
    .option('--port <n>', 'port for the peers (0: any free port)', intArg(0, 65535), 48148)
    .option('--token-file <file>', 'file holding the run token (default: TCCL_TOKEN; required off loopback unless --insecure)')
    .option('--metrics-token-file <file>', 'file holding a read-only token for /metrics, /status and the dashboard (for Prometheus)')
    .option('--insecure', 'listen off loopback without a run token (anyone who reaches the port can join; warned at start, in /status and on the dashboard)')
    .option('--peer-timeout-ms <n>', 'drop a peer silent for this long (default 3000)', intArg(50, 3_600_000))
    .option('--js-hang-timeout-ms <n>', 'drop a peer whose JavaScript thread is blocked for this long (default 300000)', intArg(100, 2 ** 31 - 1))
    .option('--heartbeat-ms <n>', 'heartbeat period (default 500)', intArg(10, 3_600_000))
    .option('--vote-timeout-ms <n>', 'how long a vote waits for every member (default 60000)', intArg(1, 2 ** 31 - 1))
    .option('--log-level <level>', `${LEVELS.join(', ')} (default TCCL_LOG_LEVEL or info)`, choiceArg(LEVELS))
    .option('--log-format <format>', 'text lines, or one json object per line (default TCCL_LOG_FORMAT or text)', choiceArg(FORMATS))
    .option('--http-port <n>', 'serve /metrics, /status and the dashboard on this port (0: any free port)', intArg(0, 65535))
    .option('--http-host <address>', 'address the HTTP port binds (0.0.0.0 to reach it from other hosts)', '127.0.0.1')
    .option('--resume-window-ms <n>', 'after a restart, how long a group waits for its members to resume (default 5000)', intArg(0, 600_000))
    .option('--etcd <urls>', 'fail-over: campaign in an etcd election (http://host:2379, comma-separated); only the leader serves')
    .option('--etcd-ttl <s>', 'etcd lease TTL: a dead leader is replaced after this long', intArg(1, 3600), 5)
    .option('--etcd-election <name>', 'etcd election name (masters of one run share it)', 'tccl-master')
    .addHelpText('after', '\nThe token never comes from the command line (other users of the host can read it). With a token, HTTP\nrequests must carry it: "Authorization: Bearer <token>", or open /?token=<token> once in a browser.')
    .action(async (flags: MasterFlags) => {
      const master = new Master(masterOptions(flags));
      const port = await master.listen();
      const auth = flags.tokenFile || process.env.TCCL_TOKEN ? ' (token required)' : '';
      io.out(`tccl master listening on ${flags.host}:${port}${auth}\n`);
      if (master.insecure) io.err(`tccl master: WARNING: ${INSECURE_WARNING}\n`);
      let lost: ((err: Error) => void) | undefined;
      const leadership = flags.etcd === undefined ? undefined : await EtcdLeadership.start(
        master, { endpoints: flags.etcd, ttlS: flags.etcdTtl, name: flags.etcdElection, logLevel: flags.logLevel, logFormat: flags.logFormat }, (err) => lost?.(err),
      );
      if (leadership) io.out(`standby until elected leader in etcd election "${flags.etcdElection}" at ${flags.etcd}\n`);
      if (master.dashboardUrl) {
        io.out(`dashboard and /metrics: ${master.dashboardUrl}${auth ? ' (open it once as ?token=<run token>)' : ''}\n`);
      }
      await new Promise<void>((resolve) => {
        // SIGTERM (a supervisor stopping or restarting the master): peers reconnect and resume at the next master.
        // SIGINT (an operator's Ctrl-C): the run ends; peers fail with ClosedError. A lost etcd lease: this master
        // stops serving (another may lead by now) and exits with 3, for its supervisor to start it again as a standby.
        const stop = (endRun: boolean) => void (leadership?.close() ?? Promise.resolve()).then(() => master.close({ endRun })).then(resolve);
        process.once('SIGINT', () => stop(true));
        process.once('SIGTERM', () => stop(false));
        lost = (err) => {
          io.err(`tccl master: ${err.message}\n`);
          process.exitCode = 3;
          void master.close({ endRun: false }).then(resolve);
        };
      });
    });
}
