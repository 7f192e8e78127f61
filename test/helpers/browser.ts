// A real headless Chromium for the dashboard tests and the screenshot script, through playwright-core (which
// never downloads a browser): the Debian `chromium` package (.ci/run installs it), or TCCL_CHROMIUM.
import * as fs from 'node:fs';
import type { Browser } from 'playwright-core';

const CANDIDATES = ['/usr/lib/chromium/chromium', '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'];

/** The browser executable, or why there is none. */
export function findChromium(): { path?: string; why?: string } {
  const env = process.env.TCCL_CHROMIUM;
  if (env) return fs.existsSync(env) ? { path: env } : { why: `TCCL_CHROMIUM=${env} does not exist` };
  const found = CANDIDATES.find((p) => fs.existsSync(p));
  return found ? { path: found } : { why: `no Chromium found (tried ${CANDIDATES.join(', ')}): apt-get install chromium, or set TCCL_CHROMIUM` };
}

export async function launchChromium(path: string): Promise<Browser> {
  const { chromium } = await import('playwright-core');
  // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
  return chromium.launch({ executablePath: path, headless: true, args: ['--no-sandbox'], timeout: 60_000 });
}
