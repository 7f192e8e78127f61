#!/usr/bin/env node
/**
 * `tccl <command>`: master, check, token, demo, bench, stress (lib/cli/*). `tccl <command> --help` says the
 * options. Bad arguments print an `error: ...` line and the command's usage hint, and exit with code 2; a
 * command that fails exits with 1.
 */
import { Command, CommanderError } from 'commander';
import { checkCommand } from './cli/check';
import { CliOutput, UsageError } from './cli/common';
import { masterCommand } from './cli/master';
import { benchCommand, demoCommand, stressCommand } from './cli/scripts';
import { tokenCommand } from './cli/token';

const STDIO: CliOutput = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) };

/** The whole command tree; `exitOverride` makes parse errors throw instead of exiting. */
export function program(io: CliOutput = STDIO): Command {
  const setup = (c: Command) => c.showHelpAfterError('(add --help for usage)').exitOverride().configureOutput({ writeOut: io.out, writeErr: io.err });
  const root = setup(new Command('tccl'))
    .description('fault-tolerant collective communications: run a master, check a host, run the demo and benchmarks')
    .version(require('../package.json').version as string, '-v, --version');
  for (const c of [masterCommand(io), checkCommand(io), tokenCommand(io), demoCommand(), benchCommand(), stressCommand()]) root.addCommand(setup(c));
  return root;
}

/** Runs the CLI; resolves with the exit code. */
export async function main(argv: string[], io: CliOutput = STDIO): Promise<number> {
  try {
    await program(io).parseAsync(argv, { from: 'user' });
    return Number(process.exitCode ?? 0);
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander printed the message already; help and version exit 0.
      return err.exitCode === 0 ? 0 : 2;
    }
    if (err instanceof UsageError) {
      io.err(`error: ${err.message}\n`);
      return 2;
    }
    io.err(`tccl: ${(err as Error).message}\n`);
    return 1;
  }
}

if (require.main === module) {
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
