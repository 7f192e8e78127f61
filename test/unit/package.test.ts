// The published entry points: `require('tccl')` (CommonJS), `import ... from 'tccl'` (ESM) and the type
// declarations, resolved through package.json "exports" exactly as a user's project resolves them.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const root = path.join(__dirname, '..', '..');

function node(args: string[]): string {
  return execFileSync(process.execPath, args, { cwd: root, encoding: 'utf8' });
}

t.before(() => {
  // npm install / npm ci build dist/ through the "prepare" script; build it here if a developer skipped that.
  if (!fs.existsSync(path.join(root, 'dist', 'index.mjs'))) {
    execFileSync('npm', ['run', 'build:ts'], { cwd: root, stdio: 'ignore' });
  }
});

t.test('CommonJS require', async (t) => {
  const out = node(['-e', "const m = require('tccl'); console.log(typeof m.RingGroup, typeof m.PeerLostError, m.version)"]);
  t.match(out.trim(), /^function function \d+\.\d+\.\d+$/);
});

t.test('ESM import with named exports, sharing one module instance with require', async (t) => {
  const out = node([
    '--input-type=module',
    '-e',
    "import { RingGroup, PeerLostError } from 'tccl'; import { createRequire } from 'node:module'; " +
      "const req = createRequire(import.meta.url); console.log(typeof RingGroup, RingGroup === req('tccl').RingGroup, new PeerLostError('x').code)",
  ]);
  t.equal(out.trim(), 'function true PEER_LOST');
});

t.test('type declarations are published for the exports map', async (t) => {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  const types = pkg.exports['.'].types as string;
  t.ok(fs.existsSync(path.join(root, types)), `${types} exists`);
  t.match(fs.readFileSync(path.join(root, types), 'utf8'), /RingGroup/);
});
