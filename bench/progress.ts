// Progress of a long benchmark or stress run: a cli-progress bar when stdout is a terminal, nothing extra when
// it is not (logs and CI keep their plain lines). `log` prints a line without breaking the bar.
import { SingleBar } from 'cli-progress';

export interface Progress {
  update(done: number, status?: string): void;
  log(line: string): void;
  stop(): void;
}

/** A bar from 0 to `total` in `unit` (e.g. 's', 'rows'). */
export function progress(total: number, unit: string): Progress {
  if (!process.stdout.isTTY) {
    return { update: () => undefined, log: (line) => console.log(line), stop: () => undefined };
  }
  const bar = new SingleBar({
    format: `{bar} {value}/{total} ${unit} | {status}`, hideCursor: true, clearOnComplete: true, barsize: 30, stream: process.stdout,
  });
  bar.start(total, 0, { status: '' });
  return {
    update: (done, status = '') => bar.update(Math.min(done, total), { status }),
    log: (line) => {
      // Clear the bar's line, print, and let the next update redraw it.
      process.stdout.write(`\r\x1b[K${line}\n`);
      bar.render();
    },
    stop: () => bar.stop(),
  };
}
