/**
 * `npm run demo`: the embedded default. An in-process master with a run token, three peer processes on loopback
 * all-reducing 16 MiB every step and syncing a 16 MiB shared state after each vote; one peer is killed and the run
 * goes on; a new peer joins late, is voted in and receives the shared state; then a short DiLoCo training run on
 * MNIST (examples/diloco) with the same machinery. While it runs, the master serves its live dashboard, /metrics
 * and /status on an HTTP port on localhost (the URL is printed; `--http-port P` picks the port).
 *   node --import tsx examples/demo.ts [--no-train] [--http-port P]
 */
import { ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { Master } from '../lib/index';

const PEER = path.join(__dirname, 'demo-peer.ts');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits (up to `ms`) until `cond` holds: a busy machine starts peer processes slowly, so the story waits for them. */
async function until(cond: () => boolean, ms: number): Promise<void> {
  for (const end = Date.now() + ms; !cond() && Date.now() < end; ) await sleep(50);
}

async function allReduceDemo(): Promise<void> {
  const token = randomBytes(16).toString('hex');
  const flag = process.argv.indexOf('--http-port');
  const httpPort = flag > 0 ? Number(process.argv[flag + 1]) : 0;
  const master = new Master({ host: '127.0.0.1', port: 0, token, logLevel: 'info', peerTimeoutMs: 3000, httpPort });
  const port = await master.listen();
  console.log(`master listening on 127.0.0.1:${port} (run token required)`);
  // The token is this demo's own, made up a moment ago: fine to show. A real run's master never prints it.
  console.log(`dashboard: ${master.dashboardUrl}?token=${token}   (also /metrics and /status; open it now, the demo takes ~15 s)\n`);
  const peers = new Map<string, ChildProcess>();
  let steps = 0;
  let lastWorld = 0;
  let world = 0;
  let caughtUp = false;
  // Shared-state hashes by revision (from peer-a), to check what a late joiner received.
  const hashAt = new Map<number, string>();
  const catchUps: { label: string; revision: number; hash: string; bytes: number; ms: number }[] = [];
  const report = () => {
    for (const c of [...catchUps]) {
      const ref = hashAt.get(c.revision);
      if (ref === undefined) continue;
      catchUps.splice(catchUps.indexOf(c), 1);
      console.log(
        `${c.label}: received the shared state: ${(c.bytes / 2 ** 20).toFixed(1)} MiB in ${c.ms.toFixed(0)} ms, revision ${c.revision}, ` +
          `weights hash ${c.hash} ${ref === c.hash ? '= peer-a\'s (hashes match)' : `!= peer-a's ${ref}`}`,
      );
    }
  };
  const start = (label: string, value: number) => {
    const child = spawn(process.execPath, ['--import', 'tsx', PEER, `127.0.0.1:${port}`, token, label, String(value)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    peers.set(label, child);
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      const e = JSON.parse(line);
      if (e.ev === 'joined') console.log(`${e.label}: joined (group of ${e.world})`);
      else if (e.ev === 'step') {
        steps++;
        // One line every 25 steps, and every time the world changes.
        if (e.label === 'peer-a') world = e.world;
        if (e.label === 'peer-a' && (e.step % 25 === 0 || e.world !== lastWorld)) {
          lastWorld = e.world;
          console.log(
            `${e.label}: step ${String(e.step).padStart(3)}  world ${e.world}  sum ${e.sum} (= contributions of the ${e.world} members, ` +
              `first and last element agree: ${e.sum === e.last})  ${e.ms.toFixed(1)} ms, ${e.mbps.toFixed(0)} MB/s`,
          );
        }
      } else if (e.ev === 'synced') {
        if (e.label === 'peer-a') {
          hashAt.set(e.revision, e.hash);
          hashAt.delete(e.revision - 50);
          report();
        }
      } else if (e.ev === 'caughtUp') {
        caughtUp = true;
        catchUps.push({ label: e.label, revision: e.revision, hash: e.hash, bytes: e.bytes, ms: e.ms });
        report();
      } else console.log(`${e.label}: ${e.ev} ${e.message ?? ''}`);
    });
  };
  // Values 1, 10, 100 make the sum show exactly which peers took part.
  start('peer-a', 1);
  start('peer-b', 10);
  start('peer-c', 100);
  await until(() => world === 3, 60_000);
  await sleep(3000);
  console.log('\n>>> SIGKILL peer-c: the survivors retry with the smaller world\n');
  peers.get('peer-c')!.kill('SIGKILL');
  await until(() => world === 2, 30_000);
  await sleep(2000);
  console.log('\n>>> starting peer-d: it waits until the members vote it in\n');
  start('peer-d', 1000);
  await until(() => caughtUp && world === 3, 60_000);
  await sleep(3000);
  for (const child of peers.values()) child.kill('SIGTERM');
  await master.close();
  console.log(`\nall-reduce demo done: ${steps} steps completed across the peers, one peer killed, one joined and caught up.\n`);
}

async function trainingDemo(): Promise<void> {
  console.log('DiLoCo on MNIST: an embedded master and 3 workers, outer sync every 50 steps, uint8 pseudo-gradients\n');
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(__dirname, 'diloco', 'local.ts'), '--workers', '3', '--wait-peers', '3', '--steps', '400', '--quant', 'uint8', '--log-every', '100'],
    { stdio: 'inherit' },
  );
  const code = await new Promise<number | null>((r) => child.on('exit', r));
  if (code !== 0) throw new Error(`the training demo exited with ${code}`);
}

async function main() {
  await allReduceDemo();
  if (!process.argv.includes('--no-train')) await trainingDemo();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
