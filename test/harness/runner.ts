// The child side of test/harness/process.ts: a process started by the harness calls serve() with its commands.
// Each request `{ id, cmd, ...args }` runs the command and is answered by one `{ ev: 'reply', id, ... }` line;
// a command that throws answers `{ ok: false, thrown: true, name, code, message }`. Closing stdin (the parent's
// stop()) runs `onExit` and exits. Two commands exist everywhere: `block` (busy-waits `ms` on the JS thread, as a
// stuck training step would) and `exit`.
import * as readline from 'node:readline';

export type Command = (args: Record<string, any>) => Promise<object | void> | object | void;

/** Prints one event line for the parent (bigints as strings). */
export function say(event: { ev: string } & Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(event, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)) + '\n');
}

/** What a test wants to know of an error. */
export function errorInfo(err: unknown): { name?: string; code?: string; message?: string; peer?: string } {
  const e = err as Error & { code?: string; peer?: string };
  return { name: e?.name, code: e?.code, message: e?.message, peer: e?.peer };
}

export function serve(commands: Record<string, Command>, options: { onExit?: () => Promise<void> } = {}): void {
  const exit = async (code = 0) => {
    await options.onExit?.().catch(() => undefined);
    process.exit(code);
  };
  const all: Record<string, Command> = {
    block: ({ ms }) => {
      const end = Date.now() + (ms ?? 1000);
      while (Date.now() < end);
      return { ok: true };
    },
    ...commands,
  };
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    const { id, cmd, ...args } = JSON.parse(line) as { id: number; cmd: string };
    if (cmd === 'exit') {
      say({ ev: 'reply', id, ok: true });
      void exit();
      return;
    }
    void (async () => {
      try {
        const run = all[cmd];
        if (!run) throw new Error(`unknown command ${JSON.stringify(cmd)}`);
        say({ ev: 'reply', id, ok: true, ...((await run(args)) ?? {}) });
      } catch (err) {
        say({ ev: 'reply', id, ok: false, thrown: true, ...errorInfo(err), stack: (err as Error)?.stack });
      }
    })();
  });
  rl.on('close', () => void exit());
}
