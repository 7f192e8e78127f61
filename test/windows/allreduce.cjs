// The whole stack on Windows: run by a Windows node.exe under Wine (scripts/windows-tests.sh) with the addon
// cross-built by mingw-w64; runs the same under any Node. An in-process master and three peer processes (this
// file with the argument `peer`) all-reduce; then one peer is killed while they all-reduce 4 MiB in a loop, and
// the two survivors must go on at world size 2 with exact sums.
// Prints `ok - ...` / `not ok - ...` and `windows-node: N passed, N failed`; exit code 1 on a failure.
// Child output goes to files: under Wine a Windows process cannot write to a Unix pipe.
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const tccl = require(path.join(__dirname, '..', '..'));

const TOKEN = 'windows-test-token';
const N = 1 << 20; // float32 elements: 4 MiB per all-reduce

/** Element i of what peer `value` contributes at `step` (exact in float32 for the sums below). */
const contribution = (value, step, i) => value * 1000 + (i % 7) + step;

/** The tccl addon file this process loaded (which build node-gyp-build picked). */
const loadedAddon = () => Object.keys(require.cache).find((k) => /tccl\.node$/.test(k));

async function peer(master, value) {
  const log = (o) => process.stdout.write(JSON.stringify(o) + '\n');
  const comm = await tccl.Communicator.connect({ master, token: TOKEN, timeoutMs: 60000, connections: 2, logLevel: 'warn' });
  const deadline = Date.now() + 60000;
  while (comm.groupWorldSize < 3) {
    if (Date.now() > deadline) throw new Error('the group never reached 3 peers');
    await comm.updateTopology({ timeoutMs: 20000 });
    if (comm.groupWorldSize < 3) await new Promise((r) => setTimeout(r, 50));
  }
  log({ ev: 'ready', value, addon: loadedAddon() });
  const data = new Float32Array(N);
  // Bounded in time, not steps: however fast the loop runs, the kill lands inside it.
  const loopEnd = Date.now() + 90000;
  for (let step = 0; Date.now() < loopEnd; step++) {
    for (let i = 0; i < N; i++) data[i] = contribution(value, step, i);
    const [r] = await comm.allReduceMany([data], { op: 'sum', retryTimeoutMs: 60000 });
    // Members of the step's group: 1+2+3 or, after the kill, 1+2.
    const values = r.worldSize === 3 ? [1, 2, 3] : [1, 2];
    let exact = true;
    for (let i = 0; i < N && exact; i++) exact = data[i] === values.reduce((s, v) => s + contribution(v, step, i), 0);
    log({ ev: 'step', step, worldSize: r.worldSize, exact });
    if (r.worldSize === 2) break;
  }
  await comm.close();
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tccl-win-'));
  const master = new tccl.Master({ host: '127.0.0.1', port: 0, token: TOKEN, peerTimeoutMs: 3000, logLevel: 'warn' });
  const port = await master.listen();
  const peers = [1, 2, 3].map((value) => {
    const file = path.join(dir, `peer${value}.log`);
    const out = fs.openSync(file, 'w');
    const child = spawn(process.execPath, [__filename, 'peer', `127.0.0.1:${port}`, String(value)], { stdio: ['ignore', out, out] });
    fs.closeSync(out);
    const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
    const lines = () => fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
    return { value, child, exited, file, lines };
  });
  let passed = 0;
  let failed = 0;
  const check = (ok, what, detail) => {
    ok ? passed++ : failed++;
    console.log(`${ok ? 'ok' : 'not ok'} - ${what}${ok || !detail ? '' : `\n  ${detail}`}`);
  };
  const waitFor = async (cond, ms) => {
    const end = Date.now() + ms;
    while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
    return cond();
  };
  try {
    const firstStep = await waitFor(() => peers.every((p) => p.lines().some((l) => l.ev === 'step' && l.worldSize === 3)), 120000);
    const addons = new Set(peers.map((p) => (p.lines().find((l) => l.ev === 'ready') || {}).addon));
    console.log(`# ${process.platform}-${process.arch} node ${process.version}, addon ${[...addons].join(', ')}`);
    check(firstStep && peers.every((p) => p.lines().filter((l) => l.ev === 'step').every((l) => l.exact)),
      'three peers all-reduce 4 MiB with exact sums', peers.map((p) => fs.readFileSync(p.file, 'utf8')).join('\n'));
    peers[2].child.kill('SIGKILL'); // TerminateProcess: the peer vanishes mid-loop, likely mid-operation
    const codes = await Promise.race([
      Promise.all(peers.slice(0, 2).map((p) => p.exited)),
      new Promise((r) => setTimeout(() => r(null), 120000).unref()),
    ]);
    const tails = peers.slice(0, 2).map((p) => p.lines().filter((l) => l.ev === 'step'));
    console.log(`# survivors ran ${tails.map((t) => t.length).join(' and ')} steps`);
    check(codes !== null && codes.every((c) => c === 0), 'the survivors finish after the kill', `exit codes ${JSON.stringify(codes)}`);
    check(tails.every((t) => t.length > 0 && t[t.length - 1].worldSize === 2 && t.every((l) => l.exact)),
      'they go on at world size 2, every sum exact', JSON.stringify(tails.map((t) => t.slice(-3))));
  } catch (err) {
    check(false, 'the Windows run completed', err && err.stack);
  } finally {
    for (const p of peers) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    await master.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log(`windows-node: ${passed} passed, ${failed} failed`);
  process.exitCode = failed === 0 ? 0 : 1;
}

if (process.argv[2] === 'peer') {
  peer(process.argv[3], Number(process.argv[4])).then(() => process.exit(0), (err) => {
    process.stdout.write(JSON.stringify({ ev: 'error', message: String(err && err.stack) }) + '\n');
    process.exit(1);
  });
} else {
  main();
}
