/** `tccl token`: writes a fresh run token to a file only its owner can read. */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { Command } from 'commander';
import { CliOutput, UsageError } from './common';

/** Writes 32 random bytes as hex to `file` with mode 0600; refuses to replace a file unless `force`. */
export function writeTokenFile(file: string, force: boolean): void {
  const token = randomBytes(32).toString('hex');
  try {
    // 'wx' fails on an existing file; the mode applies at creation, so the token is never readable by others.
    fs.writeFileSync(file, token + '\n', { mode: 0o600, flag: force ? 'w' : 'wx' });
    if (force) fs.chmodSync(file, 0o600);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'EEXIST') throw new UsageError(`${file} already exists: pass --force to replace it (every peer then needs the new token)`);
    throw new UsageError(`cannot write ${file}: ${e.message}`);
  }
}

export function tokenCommand(io: CliOutput): Command {
  return new Command('token')
    .description('write a fresh random run token to a file readable only by you')
    .option('--out <file>', 'where to write it', 'run.token')
    .option('--force', 'replace the file if it exists', false)
    .action((flags: { out: string; force: boolean }) => {
      writeTokenFile(flags.out, flags.force);
      io.out(
        `wrote a fresh run token to ${flags.out} (mode 600)\n` +
          `master:  tccl master --token-file ${flags.out}\n` +
          `workers: copy the file to each host and pass it as TCCL_TOKEN=$(cat ${flags.out}) or { token } to Communicator.connect\n`,
      );
    });
}
