#!/usr/bin/env node
/**
 * Takes the README's screenshot of the dashboard during `npm run demo`: runs the demo's all-reduce part, opens
 * the printed dashboard URL in headless Chromium (Debian's `chromium`, or TCCL_CHROMIUM), waits until a peer has
 * been killed and the late joiner is a member, and writes docs/dashboard.png.
 *   node --import tsx scripts/dashboard-screenshot.ts [--out docs/dashboard.png]
 */
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { findChromium, launchChromium } from '../test/helpers/browser';

const ROOT = path.join(__dirname, '..');

async function main(): Promise<void> {
  const outArg = process.argv.indexOf('--out');
  const out = path.resolve(outArg > 0 ? process.argv[outArg + 1] : path.join(ROOT, 'docs', 'dashboard.png'));
  const chromium = findChromium();
  if (!chromium.path) throw new Error(chromium.why);
  const demo = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'examples', 'demo.ts'), '--no-train'], {
    cwd: ROOT, stdio: ['ignore', 'pipe', 'ignore'],
  });
  const exited = new Promise<void>((resolve) => demo.once('exit', () => resolve()));
  try {
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the demo printed no dashboard URL within 60 s')), 60_000);
      readline.createInterface({ input: demo.stdout! }).on('line', (line) => {
        process.stdout.write(`demo | ${line}\n`);
        const m = /^dashboard: (http\S+)/.exec(line);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      });
      void exited.then(() => reject(new Error('the demo exited before printing its dashboard URL')));
    });
    const browser = await launchChromium(chromium.path);
    try {
      const page = await browser.newPage({ viewport: { width: 1200, height: 1300 } });
      await page.goto(url);
      await page.waitForSelector('li[data-what="peer dropped"]', { timeout: 60_000 });
      // The late joiner is voted in and receives the shared state; then its throughput shows after a few steps.
      await page.locator('tr[data-peer]:not(.pending)').filter({ hasText: 'peer-d' }).waitFor({ timeout: 60_000 });
      await new Promise((r) => setTimeout(r, 2500));
      await page.screenshot({ path: out, fullPage: true });
      console.log(`wrote ${path.relative(process.cwd(), out)}`);
    } finally {
      await browser.close();
    }
  } finally {
    if (demo.exitCode === null) demo.kill('SIGTERM');
    await exited;
  }
}

main().catch((err) => {
  console.error(`dashboard-screenshot: ${err.message}`);
  process.exit(1);
});
