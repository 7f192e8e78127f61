/**
 * The SVG of the language-model bench, dependency-free: training loss against inner step for every row
 * (left), and each row's training wall-clock, the part of it spent on the network, and bytes sent (right).
 */

/** One row of the bench (bench/lm/run.ts). */
export interface Row {
  name: string;
  label: string;
  /** Mean over the workers that finished (each evaluates its own weights), and the spread. */
  heldOutLoss: number;
  heldOutLossRange: [number, number];
  /** Mean loss on the validation split (the one tuning used). */
  validLoss?: number;
  /** False for the rows not at equal tokens (churn, a slow worker). */
  equalTokens?: boolean;
  tokens: number;
  tokensPerSecond?: number;
  /** Inner steps each finished worker did. */
  stepsPerWorker?: number[];
  /** The innerSeconds bound of the row, if any. */
  innerSeconds?: number;
  /** Bytes each worker sent in all-reduces and state syncs (the library's count): mean of the workers that ran from the start. */
  bytesPerWorker: number;
  /** Largest number of bytes one worker sent in one sync. */
  peakBytesPerSync: number;
  /** Everything that crossed the emulator (payload, framing, control plane), divided by the workers. */
  wireBytesPerWorker: number;
  /** Training loop (first step to finish()), slowest worker; and process start to the last exit. */
  trainSeconds: number;
  wallSeconds: number;
  /** Mean per worker: seconds in the tfjs step, seconds waiting on communication. */
  computeSeconds: number;
  commSeconds: number;
  /** All finished workers hold bit-identical weights. */
  identical: boolean;
  workersFinished: number;
  /** Last progress step of the killed worker; worker 0's step when the newcomer started; the newcomer's first step. */
  killedAt?: number;
  joinedAt?: number;
  admittedAt?: number;
  curve: [number, number][];
  fragments?: string[][];
  retries: number;
}

const COLORS = ['#000000', '#1f77b4', '#2ca02c', '#d62728', '#7f7f7f', '#ff7f0e', '#9467bd', '#8c564b'];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function lmChart(rows: Row[], c: { steps: number; linkMbps: number; rttMs: number; workers: number; innerSteps: number }): string {
  const W = 980;
  const H = 470;
  const L = { x: 60, y: 70, w: 430, h: 320 };
  const R = { x: 640, y: 70, w: 320, h: 320 };
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${L.x}" y="24" font-size="15" font-weight="bold">Character-level transformer on the KJV text: ${c.workers} workers through the emulated WAN</text>`);
  out.push(`<text x="${L.x}" y="44" fill="#555">${c.linkMbps} Mbit/s and ${c.rttMs} ms RTT per link; ${c.steps} inner steps per worker; npm run bench:lm (bench/results/lm.json)</text>`);

  // Left: loss curves.
  const all = rows.flatMap((r) => r.curve.map((p) => p[1]));
  const lo = Math.floor(Math.min(...all) * 10) / 10;
  const hi = Math.min(Math.ceil(Math.max(...all) * 10) / 10, lo + 2);
  const x = (s: number) => L.x + (s / c.steps) * L.w;
  const y = (v: number) => L.y + L.h - ((Math.min(v, hi) - lo) / (hi - lo)) * L.h;
  for (let k = 0; k <= 4; k++) {
    const v = lo + ((hi - lo) * k) / 4;
    out.push(`<line x1="${L.x}" x2="${L.x + L.w}" y1="${y(v)}" y2="${y(v)}" stroke="#eee"/>`);
    out.push(`<text x="${L.x - 6}" y="${y(v) + 4}" text-anchor="end">${v.toFixed(2)}</text>`);
    const s = (c.steps * k) / 4;
    out.push(`<text x="${x(s)}" y="${L.y + L.h + 16}" text-anchor="middle">${Math.round(s)}</text>`);
  }
  out.push(`<rect x="${L.x}" y="${L.y}" width="${L.w}" height="${L.h}" fill="none" stroke="#999"/>`);
  out.push(`<text x="${L.x + L.w / 2}" y="${L.y + L.h + 34}" text-anchor="middle">inner step (same tokens per step; dashed: rows not at equal tokens)</text>`);
  out.push(`<text transform="translate(18 ${L.y + L.h / 2}) rotate(-90)" text-anchor="middle">training loss, nats/char (mean of workers)</text>`);
  rows.forEach((r, i) => {
    const pts = r.curve.map(([s, v]) => `${x(s).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    // dashed: rows not at equal tokens (a slow worker, churn)
    const dash = r.equalTokens === false ? ' stroke-dasharray="5 3"' : '';
    out.push(`<polyline fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="1.6"${dash} points="${pts}"/>`);
    out.push(`<rect x="${L.x + L.w - 205}" y="${L.y + 8 + 16 * i}" width="10" height="3" fill="${COLORS[i % COLORS.length]}"/>`);
    out.push(`<text x="${L.x + L.w - 190}" y="${L.y + 13 + 16 * i}" font-size="11">${esc(r.name)}: held-out ${r.heldOutLoss.toFixed(3)}</text>`);
  });

  // Right: training wall-clock (filled) and the part of it spent waiting on the network (dark), with bytes.
  const maxT = Math.max(...rows.map((r) => r.trainSeconds));
  const bh = Math.min(40, L.h / Math.max(1, rows.length) - 8);
  const bw = R.w - 90;
  out.push(`<text x="${R.x}" y="${R.y - 10}" font-weight="bold">training wall-clock, slowest worker</text>`);
  rows.forEach((r, i) => {
    const top = R.y + i * (bh + 8) + 4;
    const w = (r.trainSeconds / maxT) * bw;
    const wc = (Math.min(r.commSeconds, r.trainSeconds) / maxT) * bw;
    out.push(`<text x="${R.x - 8}" y="${top + bh / 3 + 4}" text-anchor="end" font-size="11">${esc(r.name)}</text>`);
    out.push(`<rect x="${R.x}" y="${top}" width="${w.toFixed(1)}" height="${(bh * 0.6).toFixed(1)}" fill="${COLORS[i % COLORS.length]}" opacity="0.35"/>`);
    out.push(`<rect x="${R.x}" y="${top}" width="${wc.toFixed(1)}" height="${(bh * 0.6).toFixed(1)}" fill="${COLORS[i % COLORS.length]}"/>`);
    out.push(`<text x="${R.x + w + 4}" y="${top + bh * 0.3 + 4}" font-size="11">${r.trainSeconds.toFixed(0)} s</text>`);
    out.push(`<text x="${R.x}" y="${top + bh * 0.6 + 11}" font-size="10" fill="#444">${r.commSeconds.toFixed(0)} s on the network; ${(r.bytesPerWorker / 1e6).toFixed(2)} MB sent per worker</text>`);
  });
  out.push(`<text x="${R.x - 100}" y="${R.y + L.h + 34}" font-size="11" fill="#555">dark: waiting on the network; light: computing (4 workers share 2 cores)</text>`);
  out.push('</svg>');
  return out.join('\n');
}
