// Command-line flags of the example workers and their local launchers: `--name value` pairs and `--join`, with
// `--help` printing the example's usage. Kept to what the examples need so that each stays easy to read.

/** `--name value` flags (and `--join`) of a worker; prints `usage` and exits on `--help`. */
export function parseFlags(argv: string[], usage: string): Map<string, string> {
  const m = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') {
      console.log(usage);
      process.exit(0);
    }
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}\n${usage}`);
    if (a === '--join') m.set('join', '1');
    else {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      m.set(a.slice(2), v);
    }
  }
  return m;
}

/** A numeric flag with its default; a value that is not a number is an error that names the flag. */
export function numberFlag(flags: Map<string, string>, name: string, fallback: number): number {
  const v = flags.has(name) ? Number(flags.get(name)) : fallback;
  if (!Number.isFinite(v)) throw new Error(`--${name} must be a number, got ${flags.get(name)}`);
  return v;
}

/** A flag that must be one of `choices` (default `fallback`). */
export function choiceFlag<T extends string>(flags: Map<string, string>, name: string, choices: readonly T[], fallback: T, usage: string): T {
  const v = (flags.get(name) ?? fallback) as T;
  if (!choices.includes(v)) throw new Error(`unknown --${name} ${v}: one of ${choices.join(', ')}\n${usage}`);
  return v;
}

/** `--shard I/N` (default 0/1): this worker's part of the data. */
export function shardFlag(flags: Map<string, string>): [number, number] {
  const [shard, shards] = (flags.get('shard') ?? '0/1').split('/').map(Number);
  if (!(shards >= 1 && shard >= 0 && shard < shards)) throw new Error(`--shard must be I/N with 0 <= I < N, got ${flags.get('shard')}`);
  return [shard, shards];
}

/** A local launcher's `--workers N` (default 4), and every other argument, passed on to each worker. */
export function splitWorkers(argv: string[]): { workers: number; rest: string[] } {
  let workers = 4;
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--workers') workers = Number(argv[++i]);
    else rest.push(argv[i]);
  }
  if (!Number.isInteger(workers) || workers < 1) throw new Error('--workers must be a positive integer');
  return { workers, rest };
}
