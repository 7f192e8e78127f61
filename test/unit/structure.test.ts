// The shape of the code base: no import cycles, files small enough to hold in one's head, the protocol doc in step
// with the schema, and every TypeScript file of lib/, test/, bench/, scripts/ and examples/ type-checks.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { findCycles, importGraph, tsFiles } from '../helpers/import-graph';
import { messageTable } from '../../scripts/protocol-table';

const ROOT = path.join(__dirname, '..', '..');
// Type-checking every file takes a while on a busy 2-core machine (much less once build/ holds tsc's cache).
t.setTimeout(300_000);
const rel = (f: string) => path.relative(ROOT, f);

t.test('the cycle finder finds cycles', async (t) => {
  const g = new Map([['a', ['b']], ['b', ['c']], ['c', ['a']], ['d', ['a']], ['e', ['e']], ['f', []]]);
  t.same(findCycles(g), [['a', 'b', 'c'], ['e']]);
  t.same(findCycles(new Map([['a', ['b']], ['b', []]])), []);
});

t.test('no import cycles', async (t) => {
  for (const dir of ['lib', 'test', 'bench', 'scripts', 'examples']) {
    const cycles = findCycles(importGraph(tsFiles(path.join(ROOT, dir))));
    t.same(cycles.map((c) => c.map(rel)), [], `${dir}/: no file imports itself through others`);
  }
});

t.test('lib/ files stay under about 400 lines', async (t) => {
  for (const f of tsFiles(path.join(ROOT, 'lib'))) {
    const lines = fs.readFileSync(f, 'utf8').split('\n').length;
    t.ok(lines <= 420, `${rel(f)}: ${lines} lines`);
  }
});

t.test('docs/protocol.md lists every control message as the schema declares it', async (t) => {
  const doc = fs.readFileSync(path.join(ROOT, 'docs', 'protocol.md'), 'utf8');
  const m = /<!-- protocol-table:begin -->\n([\s\S]*?)\n<!-- protocol-table:end -->/.exec(doc);
  t.ok(m, 'the table markers are there');
  t.equal(m?.[1], messageTable(), 'regenerate with: node --import tsx scripts/protocol-table.ts');
});

t.test('everything type-checks (tsconfig.check.json)', async (t) => {
  const tsc = require.resolve('typescript/bin/tsc');
  let out = '';
  try {
    execFileSync(process.execPath, [tsc, '-p', path.join(ROOT, 'tsconfig.check.json')], { cwd: ROOT, encoding: 'utf8', stdio: 'pipe' });
  } catch (err) {
    out = String((err as { stdout?: string }).stdout ?? err);
  }
  t.equal(out, '', 'tsc reports no errors');
});
