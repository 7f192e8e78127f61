#!/usr/bin/env node
// Passes tap's TAP output through unchanged and ends it with a line `N skipped` and the plain line `N passed, N failed`
// that CI reads. Exits non-zero when anything failed or when no test ran, so `tap | node tap-summary.js` keeps
// the pass/fail status that a pipe would otherwise lose.
'use strict';
const readline = require('node:readline');

let summary = null;
let topOk = 0;
let topNotOk = 0;
let topSkip = 0;
const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on('line', (line) => {
  process.stdout.write(line + '\n');
  const m = /^# \{ (.*) \}\s*$/.exec(line);
  if (m) {
    const fields = {};
    for (const part of m[1].split(',')) {
      const [k, v] = part.split(':').map((s) => s.trim());
      if (k && v !== undefined) fields[k] = Number(v);
    }
    if (Number.isFinite(fields.total)) summary = fields;
    return;
  }
  if (/^not ok \d+/.test(line)) topNotOk++;
  else if (/^ok \d+/.test(line)) {
    if (/# SKIP/i.test(line)) topSkip++;
    else topOk++;
  }
});
rl.on('close', () => {
  let passed, failed, skipped;
  if (summary) {
    passed = summary.pass ?? 0;
    failed = summary.fail ?? 0;
    skipped = (summary.skip ?? 0) + (summary.todo ?? 0);
  } else {
    passed = topOk;
    failed = topNotOk;
    skipped = topSkip;
  }
  // A failing file (crash, timeout) shows as a top-level "not ok" even when its asserts passed.
  if (topNotOk > failed) failed = topNotOk;
  // CI reads the last line as exactly `N passed, N failed`; skips get their own line before it.
  process.stdout.write(`${skipped} skipped\n${passed} passed, ${failed} failed\n`);
  process.exitCode = failed > 0 || passed === 0 ? 1 : 0;
});
