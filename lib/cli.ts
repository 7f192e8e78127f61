#!/usr/bin/env node
/**
 * `tccl master --host 0.0.0.0 --port 48148 [--token-file F] [--peer-timeout-ms N] [--heartbeat-ms N] [--log-level L]`
 * Runs a master until SIGINT/SIGTERM. The token comes from --token-file or TCCL_TOKEN (never from argv, which
 * other users of the machine can read).
 */
import * as fs from 'node:fs';
import { Master } from './master/master';
import { LogLevel, parseLogLevel } from './log';

const USAGE = `Usage: tccl master [--host H] [--port P] [--token-file F] [--peer-timeout-ms N] [--heartbeat-ms N] [--log-level L]

  --host H             address to listen on (default 0.0.0.0)
  --port P             port (default 48148; 0 = any free port)
  --token-file F       file holding the run token (default: TCCL_TOKEN, else no authentication)
  --peer-timeout-ms N  drop a peer silent for this long (default 3000)
  --heartbeat-ms N     heartbeat period (default 500)
  --log-level L        silent, error, warn, info, debug (default TCCL_LOG_LEVEL or info)`;

function fail(msg: string): never {
  process.stderr.write(`tccl: ${msg}\n\n${USAGE}\n`);
  process.exit(2);
}

function intArg(name: string, v: string | undefined, min: number, max: number): number {
  const n = Number(v);
  if (v === undefined || !Number.isInteger(n) || n < min || n > max) fail(`${name} expects an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
  return n;
}

export async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(USAGE + '\n');
    return;
  }
  if (cmd !== 'master') fail(`unknown command ${JSON.stringify(cmd)}`);
  let host = '0.0.0.0';
  let port = 48148;
  let token = process.env.TCCL_TOKEN || undefined;
  let peerTimeoutMs: number | undefined;
  let heartbeatIntervalMs: number | undefined;
  let logLevel: LogLevel | undefined;
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i];
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = () => inline ?? rest[++i];
    switch (flag) {
      case '--host': host = value() ?? fail('--host needs a value'); break;
      case '--port': port = intArg('--port', value(), 0, 65535); break;
      case '--token-file': {
        const f = value() ?? fail('--token-file needs a value');
        try {
          token = fs.readFileSync(f, 'utf8').trim();
        } catch (err) {
          fail(`cannot read the token file ${f}: ${(err as Error).message}`);
        }
        if (!token) fail(`the token file ${f} is empty`);
        break;
      }
      case '--peer-timeout-ms': peerTimeoutMs = intArg('--peer-timeout-ms', value(), 50, 3_600_000); break;
      case '--heartbeat-ms': heartbeatIntervalMs = intArg('--heartbeat-ms', value(), 10, 3_600_000); break;
      case '--log-level':
        try {
          logLevel = parseLogLevel(value(), '--log-level');
        } catch (err) {
          fail((err as Error).message);
        }
        break;
      case '--help': case '-h': process.stdout.write(USAGE + '\n'); return;
      default: fail(`unknown option ${JSON.stringify(a)}`);
    }
  }
  const master = new Master({ host, port, token, peerTimeoutMs, heartbeatIntervalMs, logLevel });
  const bound = await master.listen();
  process.stdout.write(`tccl master listening on ${host}:${bound}${token ? ' (token required)' : ''}\n`);
  const stop = () => {
    void master.close().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((err: Error) => {
    process.stderr.write(`tccl: ${err.message}\n`);
    process.exit(1);
  });
}
