/**
 * `npm run demo`: the embedded default. An in-process master with a run token, three peer processes on loopback
 * all-reducing 16 MiB every step and syncing a 16 MiB shared state after each vote; one peer is killed and the run
 * goes on; a new peer joins late, is voted in and receives the shared state; then a short DiLoCo training run on
 * MNIST (examples/diloco) with the same machinery.
 *   node --import tsx examples/demo.ts [--no-train]
 */
import { ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { Master } from '../lib/index';

const PEER = path.join(__dirname, 'demo-peer.ts');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function allReduceDemo(): Promise<void> {
  const token = randomBytes(16).toString('hex');
  const master = new Master({ host: '127.0.0.1', port: 0, token, logLevel: 'info', peerTimeoutMs: 3000 });
  const port = await master.listen();
  console.log(`master listening on 127.0.0.1:${port} (run token required)\n`);
  const peers = new Map<string, ChildProcess>();
  let steps = 0;
  let lastWorld = 0;
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
        catchUps.push({ label: e.label, revision: e.revision, hash: e.hash, bytes: e.bytes, ms: e.ms });
        report();
      } else console.log(`${e.label}: ${e.ev} ${e.message ?? ''}`);
    });
  };
  // Values 1, 10, 100 make the sum show exactly which peers took part.
  start('peer-a', 1);
  start('peer-b', 10);
  start('peer-c', 100);
  await sleep(4000);
  console.log('\n>>> SIGKILL peer-c: the survivors retry with the smaller world\n');
  peers.get('peer-c')!.kill('SIGKILL');
  await sleep(3000);
  console.log('\n>>> starting peer-d: it waits until the members vote it in\n');
  start('peer-d', 1000);
  await sleep(4000);
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
