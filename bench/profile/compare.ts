// Before/after of the native core on one machine, in one run: this tree's native/core against another revision's
// (checked out into a git worktree under build-profile/), each driving the same native-only ring
// all-reduce peers (bench/profile/native_peer.cpp, copied into the old tree). The two alternate ROUNDS times so
// that the machine's noise hits both alike; per side the medians over rounds of: time per all-reduce, bus
// bandwidth, CPU seconds per GB reduced (mean over peers), voluntary context switches per op and threads per peer.
//   node --import tsx bench/profile/compare.ts --rev b6d52c2 [--peers 2] [--connections 8] [--mib 64] [--iters 20] [--rounds 5]
// Writes bench/results/profile-compare-nN-kK-MMmib.json.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ROOT, machineInfo, median, parseArgs, writeResult } from '../common';

interface PeerLine {
  medianMs: number;
  busbwGBs: number;
  cpuSecondsPerGBReduced: number;
  voluntarySwitches: number;
  threads?: number;
}

const args = parseArgs(process.argv.slice(2));
const rev = String(args.rev ?? '');
if (!rev) {
  console.error('usage: compare.ts --rev <git revision to compare against> [--peers 2] [--connections 8] [--mib 64] [--iters 20] [--rounds 5]');
  process.exit(64);
}
const peers = Number(args.peers ?? 2);
const k = Number(args.connections ?? 8);
const mib = Number(args.mib ?? 64);
const iters = Number(args.iters ?? 20);
const rounds = Number(args.rounds ?? 5);

/** A worktree of `rev` with this tree's profiling peer in it (the peer uses only the transport's public API). */
function oldTree(): string {
  const sha = execFileSync('git', ['rev-parse', '--short', rev], { cwd: ROOT, encoding: 'utf8' }).trim();
  const dir = path.join(ROOT, 'build-profile', `rev-${sha}`); // not under build/, which node-gyp rebuild empties
  if (!fs.existsSync(dir)) execFileSync('git', ['worktree', 'add', '--detach', dir, sha], { cwd: ROOT, stdio: 'inherit' });
  fs.mkdirSync(path.join(dir, 'bench', 'profile'), { recursive: true });
  for (const f of ['run.sh', 'native_peer.cpp']) {
    fs.copyFileSync(path.join(ROOT, 'bench', 'profile', f), path.join(dir, 'bench', 'profile', f));
  }
  return dir;
}

function runOnce(tree: string): PeerLine[] {
  const r = spawnSync('bash', [path.join(tree, 'bench', 'profile', 'run.sh'), String(peers), String(k), String(mib), String(iters)], {
    encoding: 'utf8',
    timeout: 600_000,
  });
  const lines = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as PeerLine);
  if (r.status !== 0 || lines.length !== peers) throw new Error(`run.sh in ${tree} failed (exit ${r.status}): ${r.stderr}`);
  return lines;
}

function summary(runs: PeerLine[][]) {
  const mean = (xs: number[]) => xs.reduce((a, x) => a + x, 0) / xs.length;
  const perRun = runs.map((peersOfRun) => ({
    ms: Math.max(...peersOfRun.map((p) => p.medianMs)),
    busbw: Math.min(...peersOfRun.map((p) => p.busbwGBs)),
    cpu: mean(peersOfRun.map((p) => p.cpuSecondsPerGBReduced)),
    switchesPerOp: mean(peersOfRun.map((p) => p.voluntarySwitches)) / iters,
    threads: Math.max(...peersOfRun.map((p) => p.threads ?? -1)),
  }));
  const pick = (f: (x: (typeof perRun)[number]) => number) => {
    const xs = perRun.map(f);
    return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs) };
  };
  return {
    medianMs: pick((x) => x.ms),
    busbwGBs: pick((x) => x.busbw),
    cpuSecondsPerGBReduced: pick((x) => x.cpu),
    voluntarySwitchesPerOp: pick((x) => x.switchesPerOp),
    threadsPerPeer: pick((x) => x.threads),
  };
}

const old = oldTree();
const before: PeerLine[][] = [];
const after: PeerLine[][] = [];
for (let r = 0; r < rounds; r++) {
  before.push(runOnce(old));
  after.push(runOnce(ROOT));
  process.stderr.write(`round ${r + 1}/${rounds} done\n`);
}
const result = { rev, peers, connections: k, mib, iters, rounds, before: summary(before), after: summary(after), machine: machineInfo() };
const fmt = (s: ReturnType<typeof summary>) =>
  `${s.medianMs.median.toFixed(1)} ms, busbw ${s.busbwGBs.median.toFixed(2)} GB/s, ` +
  `CPU ${s.cpuSecondsPerGBReduced.median.toFixed(2)} s/GB reduced per peer (${s.cpuSecondsPerGBReduced.min.toFixed(2)}-` +
  `${s.cpuSecondsPerGBReduced.max.toFixed(2)}), ${s.voluntarySwitchesPerOp.median.toFixed(0)} voluntary switches/op, ` +
  `${s.threadsPerPeer.median} threads/peer`;
console.log(`N=${peers} K=${k} ${mib} MiB, median of ${rounds} alternating rounds of ${iters} all-reduces`);
console.log(`  ${rev}: ${fmt(result.before)}`);
console.log(`  this tree: ${fmt(result.after)}`);
console.log(`written ${writeResult(`profile-compare-n${peers}-k${k}-${mib}mib`, result)}`);
