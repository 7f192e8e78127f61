// A strict reader of the Prometheus text exposition format (version 0.0.4), enough to check what /metrics
// serves: every sample must belong to a family declared by # TYPE, names and labels must be well formed, values
// must be numbers. Throws on anything else.
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  type: string;
  help: string;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/;
const LABEL = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"$/;
const SUFFIXES: Record<string, string[]> = { histogram: ['_bucket', '_sum', '_count'], summary: ['_sum', '_count', ''] };

export function parsePrometheus(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const familyOf = (sample: string): Family | undefined => {
    if (families.has(sample)) return families.get(sample);
    for (const [name, f] of families) if ((SUFFIXES[f.type] ?? []).some((s) => sample === name + s)) return f;
    return undefined;
  };
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('# HELP ') || line.startsWith('# TYPE ')) {
      const [, kind, name, ...rest] = line.split(' ');
      if (!NAME.test(name)) throw new Error(`bad metric name in: ${line}`);
      const f = families.get(name) ?? { type: 'untyped', help: '', samples: [] };
      if (kind === 'TYPE') {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest[0])) throw new Error(`bad type in: ${line}`);
        f.type = rest[0];
      } else f.help = rest.join(' ');
      families.set(name, f);
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    if (m[3]) {
      for (const part of m[3].split(/,(?=[a-zA-Z_][a-zA-Z0-9_]*=")/)) {
        const l = LABEL.exec(part);
        if (!l) throw new Error(`bad label ${part} in: ${line}`);
        labels[l[1]] = l[2];
      }
    }
    const value = Number(m[4] === '+Inf' ? Infinity : m[4] === '-Inf' ? -Infinity : m[4]);
    if (Number.isNaN(value) && m[4] !== 'NaN') throw new Error(`bad value in: ${line}`);
    const f = familyOf(m[1]);
    if (!f) throw new Error(`sample of an undeclared metric: ${line}`);
    f.samples.push({ name: m[1], labels, value });
  }
  return families;
}

/** Sum of the samples of `name` whose labels include `match`. */
export function metricValue(families: Map<string, Family>, name: string, match: Record<string, string> = {}): number {
  const f = families.get(name) ?? families.get(name.replace(/_(bucket|sum|count)$/, ''));
  if (!f) throw new Error(`no metric ${name}`);
  return f.samples.filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0);
}
