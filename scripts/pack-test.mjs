#!/usr/bin/env node
// Installs TCCL the way a user does and runs it from that copy: `npm pack`, then the tarball into an empty
// temporary project, offline (the tarball plus the npm cache that `npm ci` filled), then the installed `tccl`
// binary runs a master and two peers all-reduce through it, one importing the package as ESM and one requiring
// it as CommonJS. Also checks the published file list, that this platform's prebuild is what gets loaded (no
// compiler run at install, no build/ directory), what a stale build/ does, and the type declarations.
//
// Usage: node scripts/pack-test.mjs [--tarball FILE] [--from-source] [--keep]
//   Makes the prebuild for this platform first when prebuilds/ lacks it.
//   --tarball FILE  test a package made elsewhere (the workflow's tarball with every platform's prebuild).
//   --from-source   then also rebuild the addon inside the installed copy (`npm rebuild tccl
//                   --build-from-source`, what a user gets where no prebuild fits), proving the tarball holds
//                   everything a compiler needs, and all-reduce again with that build.
//   --keep          leave the temporary project in place.
// Prints `ok - ...` / `not ok - ...` per check and ends with `pack: N passed, N failed`; exits 1 on a failure.
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
const keep = process.argv.includes('--keep');
const fromSource = process.argv.includes('--from-source');
const tarballArg = process.argv.includes('--tarball') ? path.resolve(process.argv[process.argv.indexOf('--tarball') + 1] ?? '') : undefined;
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const tuple = `${process.platform}-${process.arch}`;
let passed = 0;
let failed = 0;

function check(ok, what, detail = '') {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? 'ok' : 'not ok'} - ${what}${!ok && detail ? `\n  ${String(detail).replace(/\n/g, '\n  ')}` : ''}`);
  return ok;
}

function run(cmd, args, opts = {}) {
  // Windows runs npm.cmd, which Node starts only through a shell.
  const shell = process.platform === 'win32' && cmd === npm;
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 600_000, shell, ...opts });
}

/** Runs a process to its end within timeoutMs; resolves with its exit code and output (never hangs). */
function runBounded(cmd, args, opts, timeoutMs) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => {
      out += `\n(killed after ${timeoutMs} ms)`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

// Real path: macOS's temp dir is behind a symlink, and module paths are reported resolved.
const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'tccl-pack-')));
let master;
try {
  // 1. A prebuild for this platform, made the way a release makes it.
  if (!tarballArg && !fs.existsSync(path.join(root, 'prebuilds', tuple))) {
    console.log(`# npm run prebuilds (no prebuilds/${tuple} yet)`);
    try {
      run(npm, ['run', 'prebuilds'], { cwd: root, env: { JOBS: 'max', ...process.env } });
    } catch (err) {
      throw new Error(`npm run prebuilds failed:\n${`${err.stdout ?? ''}${err.stderr ?? ''}`.slice(-4000)}`);
    }
  }

  // 2. The tarball and its file list.
  const packed = tarballArg ? describeTarball(tarballArg) : JSON.parse(run(npm, ['pack', '--json', '--pack-destination', tmp], { cwd: root }))[0];
  const files = new Set(packed.files.map((f) => f.path));
  const has = (prefix) => [...files].some((f) => f === prefix || f.startsWith(prefix + '/'));
  console.log(`# ${packed.filename}: ${packed.files.length} files, ${packed.size} bytes packed`);
  // npm pack skips a `files` entry that matches nothing without a word: that is how a missing file goes unseen.
  const missing = pkg.files.filter((f) => !f.startsWith('!') && !has(f));
  check(missing.length === 0, 'every entry of package.json "files" is in the tarball', `missing: ${missing.join(', ')}`);
  const tracked = run('git', ['ls-files', 'native/core', 'native/addon', 'native/sources.txt', 'binding.gyp'], { cwd: root })
    .split('\n').filter(Boolean);
  const lost = tracked.filter((f) => !files.has(f));
  check(tracked.length > 0 && lost.length === 0, 'everything a source build needs is in the tarball', `missing: ${lost.join(', ')}`);
  const entries = [pkg.main, pkg.types, ...Object.values(pkg.exports['.']), ...Object.values(pkg.bin)].map((f) => path.posix.normalize(f));
  const noEntry = entries.filter((f) => !files.has(f));
  check(noEntry.length === 0, 'main, types, exports and bin targets are in the tarball', `missing: ${noEntry.join(', ')}`);
  const stray = [...files].filter((f) => /^(test|bench|lib|build|examples|scripts|native\/test)\//.test(f));
  check(stray.length === 0, 'no tests, benchmarks, TypeScript sources or build outputs in the tarball', stray.slice(0, 10).join(', '));
  check(has(`prebuilds/${tuple}`), `the ${tuple} prebuild is in the tarball`);

  // 3. An empty project installs it offline.
  const app = path.join(tmp, 'app');
  fs.mkdirSync(app);
  writeAppProject(app, packed);
  const t0 = Date.now();
  let installed = false;
  try {
    run(npm, ['ci', '--offline', '--no-audit', '--no-fund'], { cwd: app });
    installed = true;
  } catch (err) {
    check(false, 'npm ci --offline: the tarball into an empty project', `${err.stderr ?? err.message}`.slice(-3000));
  }
  if (installed) {
    check(true, `npm ci --offline: the tarball into an empty project (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    const dir = path.join(app, 'node_modules', 'tccl');
    check(!fs.existsSync(path.join(dir, 'build')), 'the install compiled nothing (no build/ directory)');
    const resolveAddon = (env = {}) =>
      run(process.execPath, ['-e', "process.stdout.write(require('node-gyp-build').resolve(process.argv[1]))", dir], {
        cwd: app, env: { ...process.env, PREBUILDS_ONLY: '', ...env },
      });
    const addonPath = resolveAddon();
    check(addonPath.includes(path.join('prebuilds', tuple)), 'node-gyp-build picks the prebuild', addonPath);

    // 4. The installed binary runs a master; an ESM and a CommonJS peer all-reduce through the installed copy.
    await allReduceFromInstalledCopy(app, dir, path.join(dir, 'prebuilds'), 'prebuilt');

    // 5. node-gyp-build prefers build/Release: a stale one hides the prebuild (what docs/platforms.md says),
    //    and PREBUILDS_ONLY=1 is the way around it.
    const stale = path.join(dir, 'build', 'Release');
    fs.mkdirSync(stale, { recursive: true });
    fs.writeFileSync(path.join(stale, 'tccl.node'), 'not a shared library: a stale build stand-in');
    const loadAddon = (env) => runBounded(process.execPath, ['-e', "require('node-gyp-build')(process.argv[1]); console.log('loaded')", dir],
      { cwd: app, env: { ...process.env, PREBUILDS_ONLY: '', ...env } }, 30_000);
    const hidden = await loadAddon({});
    check(hidden.code !== 0 && resolveAddon().includes('build'), 'a stale build/Release/tccl.node is loaded before the prebuild', hidden.out);
    const forced = await loadAddon({ PREBUILDS_ONLY: '1' });
    check(forced.code === 0 && resolveAddon({ PREBUILDS_ONLY: '1' }).includes('prebuilds'), 'PREBUILDS_ONLY=1 loads the prebuild past a stale build', forced.out);
    fs.rmSync(path.join(dir, 'build'), { recursive: true });

    // 6. The published type declarations type-check a user's file.
    const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    fs.writeFileSync(path.join(app, 'check.ts'), [
      "import { Communicator, Master, PeerLostError, type AllReduceOptions } from 'tccl';",
      'export async function f(c: Communicator): Promise<number> {',
      "  const o: AllReduceOptions = { op: 'sum' };",
      '  const r = await c.allReduce(new Float32Array(4), o);',
      '  return r.worldSize + (new PeerLostError(\'x\').code === \'PEER_LOST\' ? 1 : 0);',
      '}',
      'export const m = new Master({ port: 0 });',
      '',
    ].join('\n'));
    const types = await runBounded(process.execPath, [tsc, '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext',
      '--target', 'es2022', '--types', 'node', '--typeRoots', path.join(root, 'node_modules', '@types'), 'check.ts'], { cwd: app }, 120_000);
    check(types.code === 0, 'the published type declarations type-check a user file (module nodenext)', types.out);

    if (fromSource) {
      const t1 = Date.now();
      const built = await runBounded(npm, ['rebuild', 'tccl', '--offline', '--build-from-source'],
        { cwd: app, shell: process.platform === 'win32' }, 600_000);
      check(built.code === 0 && fs.existsSync(path.join(dir, 'build', 'Release', 'tccl.node')),
        `the addon compiles from the installed files alone (${((Date.now() - t1) / 1000).toFixed(1)} s)`, built.out.slice(-3000));
      await allReduceFromInstalledCopy(app, dir, path.join(dir, 'build'), 'source-built');
    }
  }
} catch (err) {
  check(false, 'pack test ran to the end', err.stack ?? err);
} finally {
  await stopMaster().catch(() => {});
  if (keep) console.log(`# kept ${tmp}`);
  else fs.rmSync(tmp, { recursive: true, force: true });
}
console.log(`pack: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);

/** What `npm pack --json` says of a tarball, for one made elsewhere (copied next to the project). */
function describeTarball(file) {
  const filename = path.basename(file);
  fs.copyFileSync(file, path.join(tmp, filename));
  const bytes = fs.readFileSync(file);
  const list = run('tar', ['-tzf', file]).split('\n').filter((l) => l && !l.endsWith('/'));
  return {
    filename, size: bytes.length, integrity: `sha512-${createHash('sha512').update(bytes).digest('base64')}`,
    files: list.map((l) => ({ path: l.replace(/^package\//, '') })),
  };
}

/**
 * The user's project: it depends on the tarball, with a lockfile that pins TCCL's dependencies to the versions
 * of this repository's lockfile. Offline, npm can only install that way: resolving version ranges without a
 * lockfile needs the registry's full package documents, which the cache that `npm ci` filled does not hold.
 */
function writeAppProject(app, packed) {
  const spec = `file:../${packed.filename}`;
  fs.writeFileSync(path.join(app, 'package.json'),
    JSON.stringify({ name: 'tccl-pack-test', version: '1.0.0', private: true, dependencies: { tccl: spec } }, null, 2));
  const repoLock = JSON.parse(fs.readFileSync(path.join(root, 'package-lock.json'), 'utf8'));
  const packages = {
    '': { name: 'tccl-pack-test', version: '1.0.0', dependencies: { tccl: spec } },
    'node_modules/tccl': {
      version: pkg.version, resolved: spec, integrity: packed.integrity, hasInstallScript: true, license: pkg.license,
      dependencies: pkg.dependencies, bin: pkg.bin, engines: pkg.engines,
    },
  };
  // Entries not marked dev are the dependency closure of the published package.
  for (const [where, entry] of Object.entries(repoLock.packages)) {
    if (where !== '' && !entry.dev && !entry.link) packages[where] = entry;
  }
  fs.writeFileSync(path.join(app, 'package-lock.json'),
    JSON.stringify({ name: 'tccl-pack-test', version: '1.0.0', lockfileVersion: 3, requires: true, packages }, null, 2));
}

async function allReduceFromInstalledCopy(app, dir, expectAddonUnder, kind) {
  const bin = path.join(app, 'node_modules', '.bin', process.platform === 'win32' ? 'tccl.cmd' : 'tccl');
  const help = await runBounded(bin, ['--help'], { cwd: app, shell: process.platform === 'win32' }, 30_000);
  check(help.code === 0 && /Usage: tccl/.test(help.out) && /^\s+master\b/m.test(help.out),
    'the tccl binary prints its usage, with the master command', help.out);

  fs.writeFileSync(path.join(app, 'run.token'), 'pack-test-token\n');
  master = spawn(bin, ['master', '--host', '127.0.0.1', '--port', '0', '--token-file', 'run.token', '--log-level', 'warn'],
    { cwd: app, stdio: ['ignore', 'pipe', 'pipe'], shell: process.platform === 'win32' });
  const address = await new Promise((resolve) => {
    let out = '';
    const timer = setTimeout(() => resolve(null), 30_000);
    master.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (\S+):(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(`${m[1]}:${m[2]}`);
      }
    });
    master.on('exit', () => resolve(null));
  });
  if (!check(address !== null, 'tccl master starts from the installed binary')) return;

  // One body for both module systems, so the two peers differ only in how they load the package.
  const body = `
    const value = Number(process.env.VALUE);
    const comm = await init({ timeoutMs: 30000 });
    const deadline = Date.now() + 30000;
    // The first peer admits the second when it arrives (updateTopology is the vote).
    while (comm.groupWorldSize < 2) {
      if (Date.now() > deadline) throw new Error('the second peer never joined');
      await comm.updateTopology({ timeoutMs: 10000 });
      if (comm.groupWorldSize < 2) await new Promise((r) => setTimeout(r, 50));
    }
    const n = 1 << 16;
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = value * 100 + (i % 5);
    const r = await allReduce(data, { op: 'sum', timeoutMs: 30000 });
    let exact = true;
    for (let i = 0; i < n; i++) exact = exact && data[i] === 300 + 2 * (i % 5);
    const addons = Object.keys(require.cache).filter((k) => k.endsWith('.node'));
    console.log(JSON.stringify({ worldSize: r.worldSize, exact, addons }));
    await shutdown();`;
  fs.writeFileSync(path.join(app, 'peer.mjs'),
    `import { init, allReduce, shutdown } from 'tccl';\nimport { createRequire } from 'node:module';\n` +
    `const require = createRequire(import.meta.url);\n${body}\n`);
  fs.writeFileSync(path.join(app, 'peer.cjs'),
    `'use strict';\nconst { init, allReduce, shutdown } = require('tccl');\n(async () => {${body}\n})().catch((e) => { console.error(e); process.exit(1); });\n`);
  const env = { ...process.env, TCCL_MASTER: address, TCCL_TOKEN: 'pack-test-token', TCCL_LOG_LEVEL: 'warn' };
  const [esm, cjs] = await Promise.all([
    runBounded(process.execPath, ['peer.mjs'], { cwd: app, env: { ...env, VALUE: '1' } }, 90_000),
    runBounded(process.execPath, ['peer.cjs'], { cwd: app, env: { ...env, VALUE: '2' } }, 90_000),
  ]);
  for (const [name, res] of [['ESM', esm], ['CommonJS', cjs]]) {
    const line = res.out.split('\n').find((l) => l.startsWith('{'));
    const r = line ? JSON.parse(line) : {};
    check(res.code === 0 && r.worldSize === 2 && r.exact === true, `${name} peer all-reduced with the other through the installed copy`, res.out);
    const ours = (r.addons ?? []).filter((f) => f.startsWith(dir + path.sep));
    check(ours.length === 1 && ours[0].startsWith(expectAddonUnder + path.sep), `${name} peer loaded the ${kind} addon`, ours.join(', '));
  }
  await stopMaster();
}

/** Ends the master this script started (on Windows the .cmd shim's whole process tree). */
async function stopMaster() {
  if (!master || master.exitCode !== null || master.signalCode !== null) return;
  const exited = new Promise((resolve) => master.once('exit', resolve));
  if (process.platform === 'win32') execFileSync('taskkill', ['/pid', String(master.pid), '/T', '/F'], { stdio: 'ignore' });
  else master.kill('SIGTERM');
  await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
  if (master.exitCode === null && master.signalCode === null) master.kill('SIGKILL');
}
