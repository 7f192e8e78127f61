// The `tccl/tfjs` entry point: resolved through package.json "exports" as a user's project resolves it, with
// @tensorflow/tfjs an optional peer dependency that the main entry never loads.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const root = path.join(__dirname, '..', '..');

/** Makes every `@tensorflow/...` require fail as it does when the package is not installed. */
const WITHOUT_TFJS = `
const Module = require('node:module');
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, ...rest) {
  if (request.startsWith('@tensorflow/')) {
    const e = new Error("Cannot find module '" + request + "'");
    e.code = 'MODULE_NOT_FOUND';
    throw e;
  }
  return resolve.call(this, request, ...rest);
};
`;

function node(args: string[]): string {
  return execFileSync(process.execPath, args, { cwd: root, encoding: 'utf8' });
}

t.before(() => {
  if (!fs.existsSync(path.join(root, 'dist', 'tfjs', 'index.mjs'))) {
    execFileSync('npm', ['run', 'build:ts'], { cwd: root, stdio: 'ignore' });
  }
});

t.test('the main entry loads and works without @tensorflow/tfjs; tccl/tfjs says what to install', async (t) => {
  const out = node([
    '-e',
    WITHOUT_TFJS +
      `
      let tfjsFound = true;
      try { require('@tensorflow/tfjs'); } catch { tfjsFound = false; }
      const m = require('tccl');
      const master = new m.Master({ port: 0 });
      const entry = require('tccl/tfjs');
      // a tensor-shaped object and a group of one: the call gets as far as making the result tensors
      const tensor = { dtype: 'float32', size: 1, shape: [1], isDisposed: false, dataSync: () => new Float32Array([2]) };
      const comm = { allReduceMany: async ([item]) => [{ data: item.output, worldSize: 1, bytesSent: 0, bytesReceived: 0 }] };
      entry.allReduceTensors(comm, [tensor]).then(
        () => console.log('{"error":"resolved without tfjs?"}'),
        (e) => console.log(JSON.stringify({ tfjsFound, master: typeof master.listen, tfjsEntry: typeof entry.TfjsDiLoCo, error: e.message })),
      );
      `,
  ]);
  const r = JSON.parse(out.trim());
  t.equal(r.tfjsFound, false, 'the hook hides @tensorflow/tfjs');
  t.equal(r.master, 'function', 'require("tccl") works');
  t.equal(r.tfjsEntry, 'function', 'require("tccl/tfjs") works too: tfjs is loaded on first use');
  t.match(r.error, /^tccl\/tfjs needs the optional peer dependency @tensorflow\/tfjs: run `npm install @tensorflow\/tfjs`/);
});

t.test('require("tccl") loads nothing of TensorFlow.js even when it is installed', async (t) => {
  const out = node([
    '-e',
    `require('tccl'); require('tccl/tfjs');
     const loaded = Object.keys(require.cache).filter((f) => f.includes('@tensorflow'));
     console.log(JSON.stringify({ loaded, resolvable: !!require.resolve('@tensorflow/tfjs') }))`,
  ]);
  const r = JSON.parse(out.trim());
  t.equal(r.resolvable, true);
  t.same(r.loaded, [], 'no @tensorflow module in require.cache');
});

t.test('ESM import of tccl/tfjs shares the CommonJS instance; types are published', async (t) => {
  const out = node([
    '--input-type=module',
    '-e',
    "import { TfjsDiLoCo, allReduceGradients } from 'tccl/tfjs'; import { createRequire } from 'node:module'; " +
      "const req = createRequire(import.meta.url); console.log(typeof allReduceGradients, TfjsDiLoCo === req('tccl/tfjs').TfjsDiLoCo)",
  ]);
  t.equal(out.trim(), 'function true');
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  t.ok(fs.existsSync(path.join(root, pkg.exports['./tfjs'].types)));
  t.equal(pkg.peerDependenciesMeta['@tensorflow/tfjs'].optional, true, '@tensorflow/tfjs is an optional peer dependency');
  t.notOk(pkg.dependencies['@tensorflow/tfjs'], 'and not a dependency');
});
