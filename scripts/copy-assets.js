#!/usr/bin/env node
// Copies the files of lib/ that tsc does not emit (the dashboard's page, script and style) into dist/, next to
// the compiled code that serves them (dist/master/http.js reads ./dashboard).
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const from = path.join(root, 'lib', 'master', 'dashboard');
const to = path.join(root, 'dist', 'master', 'dashboard');
fs.mkdirSync(to, { recursive: true });
for (const f of fs.readdirSync(from)) fs.copyFileSync(path.join(from, f), path.join(to, f));
