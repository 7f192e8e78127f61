/**
 * A small dependency-free SVG line chart: throughput against K (connections per link), one line per series,
 * x on a log2 scale, plus a dashed "ideal" line min(K x per-connection cap, aggregate cap).
 */

export interface Series {
  label: string;
  points: Array<{ k: number; mbps: number }>;
  dashed?: boolean;
}

export interface ChartOptions {
  title: string;
  subtitle?: string;
  ks: number[];
  /** Per-connection cap and aggregate cap in Mbit/s, for the ideal line. */
  connMbps: number;
  aggMbps: number;
  width?: number;
  height?: number;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function throughputChart(series: Series[], o: ChartOptions): string {
  const W = o.width ?? 880;
  const H = o.height ?? 460;
  const m = { l: 64, r: 270, t: 56, b: 52 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const ks = [...o.ks].sort((a, b) => a - b);
  const lx0 = Math.log2(ks[0]);
  const lx1 = Math.log2(ks[ks.length - 1]);
  const x = (k: number) => m.l + (lx1 === lx0 ? pw / 2 : ((Math.log2(k) - lx0) / (lx1 - lx0)) * pw);
  const ymax = Math.ceil((o.aggMbps * 1.1) / 100) * 100;
  const y = (v: number) => m.t + ph - (Math.min(v, ymax) / ymax) * ph;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${m.l}" y="22" font-size="15" font-weight="bold">${esc(o.title)}</text>`);
  if (o.subtitle) out.push(`<text x="${m.l}" y="40" fill="#555">${esc(o.subtitle)}</text>`);
  // Grid and axes.
  const step = ymax <= 500 ? 50 : 100;
  for (let v = 0; v <= ymax; v += step) {
    out.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${y(v)}" y2="${y(v)}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${m.l - 6}" y="${y(v) + 4}" text-anchor="end" fill="#333">${v}</text>`);
  }
  for (const k of ks) {
    out.push(`<line x1="${x(k)}" x2="${x(k)}" y1="${m.t}" y2="${m.t + ph}" stroke="#f0f0f0"/>`);
    out.push(`<text x="${x(k)}" y="${m.t + ph + 18}" text-anchor="middle" fill="#333">${k}</text>`);
  }
  out.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`);
  out.push(`<text x="${m.l + pw / 2}" y="${H - 12}" text-anchor="middle">TCP connections per link (K)</text>`);
  out.push(`<text transform="translate(16 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle">bus bandwidth per host (Mbit/s)</text>`);
  // Ideal line: min(K x conn cap, aggregate), drawn on a fine grid so the knee shows.
  const ideal: string[] = [];
  for (let i = 0; i <= 64; i++) {
    const k = 2 ** (lx0 + ((lx1 - lx0) * i) / 64);
    ideal.push(`${x(k).toFixed(1)},${y(Math.min(k * o.connMbps, o.aggMbps)).toFixed(1)}`);
  }
  out.push(`<polyline points="${ideal.join(' ')}" fill="none" stroke="#888" stroke-width="1.5" stroke-dasharray="6 4"/>`);
  // Series.
  series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length];
    const pts = [...s.points].sort((a, b) => a.k - b.k);
    if (pts.length === 0) return;
    const dash = s.dashed ? ' stroke-dasharray="3 3"' : '';
    out.push(`<polyline points="${pts.map((p) => `${x(p.k).toFixed(1)},${y(p.mbps).toFixed(1)}`).join(' ')}" fill="none" stroke="${c}" stroke-width="2"${dash}/>`);
    for (const p of pts) out.push(`<circle cx="${x(p.k).toFixed(1)}" cy="${y(p.mbps).toFixed(1)}" r="3" fill="${c}"/>`);
  });
  // Legend.
  const lx = m.l + pw + 16;
  let ly = m.t + 8;
  out.push(`<line x1="${lx}" x2="${lx + 22}" y1="${ly}" y2="${ly}" stroke="#888" stroke-width="1.5" stroke-dasharray="6 4"/>`);
  out.push(`<text x="${lx + 28}" y="${ly + 4}">ring ideal min(K×${o.connMbps}, ${o.aggMbps})</text>`);
  series.forEach((s, i) => {
    ly += 20;
    const c = COLORS[i % COLORS.length];
    const dash = s.dashed ? ' stroke-dasharray="3 3"' : '';
    out.push(`<line x1="${lx}" x2="${lx + 22}" y1="${ly}" y2="${ly}" stroke="${c}" stroke-width="2"${dash}/>`);
    out.push(`<text x="${lx + 28}" y="${ly + 4}">${esc(s.label)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
