// The `tccl` command line: --help of every command, and the exact error of each kind of bad argument (exit
// code 2, the message naming the option and what it expects). In-process: commander's output is captured.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { main } from '../../lib/cli';

async function tccl(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const saved = process.exitCode;
  const code = await main(argv, { out: (s) => { out += s; }, err: (s) => { err += s; } });
  process.exitCode = saved;
  return { code, out, err };
}

t.test('--help of every command', async (t) => {
  const top = await tccl('--help');
  t.equal(top.code, 0);
  for (const c of ['master', 'check', 'token', 'demo', 'bench', 'stress']) t.match(top.out, new RegExp(`\\n  ${c} `), `lists ${c}`);
  const expect: Record<string, RegExp[]> = {
    master: [/Usage: tccl master \[options\]/, /--etcd <urls>/, /--etcd-ttl <s>/, /--resume-window-ms <n>/, /--js-hang-timeout-ms <n>/, /--http-port <n>/, /--log-format <format>/, /--token-file <file>/, /default:\s+48148/, /--insecure/, /--metrics-token-file <file>/],
    check: [/Usage: tccl check \[options\]/, /--master <host:port>/, /--data-port <n>/, /--advertise-address/],
    token: [/Usage: tccl token \[options\]/, /--out <file>/, /--force/],
    demo: [/Usage: tccl demo \[options\]/, /--no-train/, /--http-port/],
    bench: [/Usage: tccl bench \[options\] <name> \[args\.\.\.\]/, /allreduce +ring all-reduce/, /wan +all-reduce over an emulated WAN/, /churn/],
    stress: [/Usage: tccl stress \[options\]/, /--duration <s>/, /--max-peers <n>/, /--seed <n>/],
  };
  for (const [c, patterns] of Object.entries(expect)) {
    const r = await tccl(c, '--help');
    t.equal(r.code, 0, `${c} --help exits 0`);
    t.equal(r.err, '', `${c} --help prints no error`);
    for (const p of patterns) t.match(r.out, p, `${c} --help: ${p}`);
  }
  t.match((await tccl('help', 'check')).out, /Usage: tccl check/, '`tccl help check` too');
});

t.test('bad arguments: exact messages, exit code 2', async (t) => {
  const cases: [string[], string][] = [
    [['nope'], "error: unknown command 'nope'"],
    [['master', '--port', 'x'], "error: option '--port <n>' argument 'x' is invalid. Expected an integer from 0 to 65535."],
    [['master', '--port', '70000'], "error: option '--port <n>' argument '70000' is invalid. Expected an integer from 0 to 65535."],
    [['master', '--http-port', '-1'], "error: option '--http-port <n>' argument '-1' is invalid. Expected an integer from 0 to 65535."],
    [['master', '--log-format', 'xml'], "error: option '--log-format <format>' argument 'xml' is invalid. Expected one of text, json."],
    [['master', '--log-level', 'loud'], "error: option '--log-level <level>' argument 'loud' is invalid. Expected one of silent, error, warn, info, debug."],
    [['master', '--peer-timeout-ms', '5'], "error: option '--peer-timeout-ms <n>' argument '5' is invalid. Expected an integer from 50 to 3600000."],
    [['master', '--js-hang-timeout-ms', '5'], "error: option '--js-hang-timeout-ms <n>' argument '5' is invalid. Expected an integer from 100 to 2147483647."],
    [['master', '--bogus'], "error: unknown option '--bogus'"],
    [['master', '--port'], "error: option '--port <n>' argument missing"],
    [['master', '--token-file', '/nonexistent/tccl.token'], 'error: cannot read the token file /nonexistent/tccl.token: ENOENT: no such file or directory'],
    [['check'], "error: required option '--master <host:port>' not specified"],
    [['check', '--master', 'nohost'], "error: option '--master <host:port>' argument 'nohost' is invalid. Expected the address as \"host:port\""],
    [['check', '--master', '127.0.0.1:1', '--probe-mib', '100'], "error: option '--probe-mib <n>' argument '100' is invalid. Expected an integer from 0 to 64."],
    [['token', '--out'], "error: option '--out <file>' argument missing"],
    [['bench'], "error: missing required argument 'name'"],
    [['bench', 'nope'], 'error: unknown benchmark "nope": choose one of allreduce, wan, churn, shared-state, quantization, diloco, gpu'],
    [['stress', '--duration', '0'], "error: option '--duration <s>' argument '0' is invalid. Expected an integer from 1 to 86400."],
    [['stress', '--max-peers', 'many'], "error: option '--max-peers <n>' argument 'many' is invalid. Expected an integer from 3 to 64."],
    [['demo', '--http-port', 'x'], "error: option '--http-port <n>' argument 'x' is invalid. Expected an integer from 0 to 65535."],
  ];
  for (const [argv, message] of cases) {
    const r = await tccl(...argv);
    t.equal(r.code, 2, `tccl ${argv.join(' ')}: exit code 2`);
    t.ok(r.err.startsWith(message), `tccl ${argv.join(' ')}: ${r.err.split('\n')[0]}`);
    t.equal(r.out, '', 'nothing on stdout');
  }
  t.match((await tccl('master', '--bogus')).err, /\(add --help for usage\)/, 'points at --help');
});

t.test('tccl token writes a fresh token only its owner can read, and never overwrites by accident', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tccl-token-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'run.token');
  const first = await tccl('token', '--out', file);
  t.equal(first.code, 0);
  t.match(first.out, `wrote a fresh run token to ${file} (mode 600)`);
  const token = fs.readFileSync(file, 'utf8').trim();
  t.match(token, /^[0-9a-f]{64}$/, '32 random bytes as hex');
  if (process.platform !== 'win32') t.equal(fs.statSync(file).mode & 0o777, 0o600, 'mode 600');
  const again = await tccl('token', '--out', file);
  t.equal(again.code, 2);
  t.equal(again.err, `error: ${file} already exists: pass --force to replace it (every peer then needs the new token)\n`);
  t.equal(fs.readFileSync(file, 'utf8').trim(), token, 'the old token is kept');
  t.equal((await tccl('token', '--out', file, '--force')).code, 0);
  t.not(fs.readFileSync(file, 'utf8').trim(), token, '--force writes a new one');
  if (process.platform !== 'win32') t.equal(fs.statSync(file).mode & 0o777, 0o600, 'still mode 600');
});
