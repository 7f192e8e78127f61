/**
 * The training text: the King James Version of the Bible as Debian's `bible-kjv` package ships it (public domain:
 * the translation dates from 1611; the package's data file is free to copy, see
 * /usr/share/doc/bible-kjv-text/copyright), about 4.1 million characters of English. `prepareCorpus()` installs
 * the package when it is missing and this process may (root with apt-get), extracts the plain text with the
 * package's `bible` program and caches it; `--text FILE` uses any other UTF-8 text instead.
 *
 * Character level: the vocabulary is the set of characters of the text (73 for the KJV). Blocks of 4,096
 * characters: of every 20, the 10th is the validation split (for tuning: bench/lm/tune.ts) and the 20th the
 * held-out split (for the reported loss only, never for tuning); both span the whole book rather than its end.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { mulberry32 } from '../../lib/random';

export const CORPUS_SOURCE = 'King James Version of the Bible, Debian package bible-kjv-text (public domain text)';
const CACHE = path.join(os.tmpdir(), 'tccl-lm-kjv.txt');
const BLOCK = 4096;
const EVERY = 20;
const HELD_OUT_AT = EVERY - 1;
const VALIDATION_AT = EVERY / 2 - 1;

function which(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const p = path.join(dir, cmd);
    if (fs.existsSync(p)) return p;
  }
  return undefined;
}

/**
 * Returns the path of the KJV text, extracting it (and installing `bible-kjv` with apt-get if needed and
 * possible) on first use. Throws an error that says what to install when it cannot.
 */
export function prepareCorpus(log: (s: string) => void = () => undefined): string {
  if (fs.existsSync(CACHE) && fs.statSync(CACHE).size > 1_000_000) return CACHE;
  let bible = which('bible');
  if (!bible && process.platform === 'linux' && process.getuid?.() === 0 && which('apt-get')) {
    log('installing the Debian package bible-kjv (the KJV text and its reader) with apt-get ...');
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    const apt = (args: string[]) => execFileSync('apt-get', ['-o', 'DPkg::Lock::Timeout=300', ...args], { stdio: 'ignore', env, timeout: 600_000 });
    try {
      apt(['install', '-y', '-qq', 'bible-kjv']);
    } catch {
      apt(['update', '-qq']); // a fresh machine's package lists may not know the package yet
      apt(['install', '-y', '-qq', 'bible-kjv']);
    }
    bible = which('bible');
  }
  if (!bible) {
    throw new Error(
      'The language-model example trains on the KJV text of the Debian package bible-kjv, which is not installed: ' +
        'run `sudo apt-get install bible-kjv`, or pass --text FILE with any English UTF-8 text of a few MB',
    );
  }
  // -l: one line per verse (no wrapping); every book and chapter in order.
  const raw = execFileSync(bible, ['-l', '1000000', 'Gen1:1-Rev22:21'], { maxBuffer: 64 << 20, encoding: 'utf8' });
  const text = raw
    .split('\n')
    .map((l) => l.replace(/^ +\d+ /, '')) // verse numbers
    .filter((l) => l.trim().length > 0)
    .join('\n');
  if (text.length < 1_000_000) throw new Error(`The bible program produced only ${text.length} characters; is bible-kjv-text installed?`);
  const tmp = `${CACHE}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text + '\n');
  fs.renameSync(tmp, CACHE);
  return CACHE;
}

export interface Corpus {
  /** Characters of the vocabulary; token id i is chars[i]. */
  chars: string[];
  train: Uint8Array;
  /** For choosing hyperparameters (bench/lm/tune.ts). */
  validation: Uint8Array;
  /** For the reported loss only. */
  heldOut: Uint8Array;
}

/** Reads a text file and encodes it; blocks of 4,096 characters, of every 20 one for validation and one held out. */
export function loadCorpus(file: string): Corpus {
  const text = fs.readFileSync(file, 'utf8');
  const chars = [...new Set(text)].sort();
  if (chars.length > 255) throw new Error(`${file} has ${chars.length} distinct characters; this example supports at most 255`);
  const id = new Map(chars.map((c, i) => [c, i]));
  const all = Uint8Array.from(text, (c) => id.get(c)!);
  const blocks = Math.ceil(all.length / BLOCK);
  const train: number[] = [];
  const held: number[] = [];
  const valid: number[] = [];
  for (let b = 0; b < blocks; b++) (b % EVERY === HELD_OUT_AT ? held : b % EVERY === VALIDATION_AT ? valid : train).push(b);
  const pack = (list: number[]) => {
    const out = new Uint8Array(list.reduce((n, b) => n + Math.min(BLOCK, all.length - b * BLOCK), 0));
    let o = 0;
    for (const b of list) {
      const part = all.subarray(b * BLOCK, Math.min(all.length, (b + 1) * BLOCK));
      out.set(part, o);
      o += part.length;
    }
    return out;
  };
  return { chars, train: pack(train), validation: pack(valid), heldOut: pack(held) };
}

/** A small deterministic PRNG (mulberry32), so every run draws the same batches. */
export const rng = mulberry32;

/**
 * Fills x and y ([batch * context] token ids; y is x shifted by one) with random windows of this worker's shard
 * of `data`. Shard i of n is every n-th block of 4,096 characters starting at block i: a partition spread over
 * the whole text, as a shuffled data set gives each data-parallel worker (contiguous quarters of one book would
 * give each worker its own style: the Old Testament's books against the New's). Windows stay inside one block.
 * Deterministic in (seed, shard, step).
 */
export function sampleBatch(data: Uint8Array, shard: number, shards: number, step: number, seed: number, x: Int32Array, y: Int32Array, context: number): void {
  const blocks = Math.floor(data.length / BLOCK);
  const mine = Math.floor((blocks - 1 - shard) / shards) + 1; // blocks b < blocks with b % shards === shard
  if (blocks < shards || mine < 1 || context + 1 >= BLOCK) {
    throw new RangeError(
      `The training text (${data.length} characters) is too short for ${shards} shards of ${BLOCK}-character blocks with context ${context}: use a longer text or fewer workers`,
    );
  }
  const r = rng(seed * 1_000_003 + shard * 7919 + step * 104_729);
  const batch = x.length / context;
  for (let b = 0; b < batch; b++) {
    const block = Math.floor(r() * mine) * shards + shard;
    const o = block * BLOCK + Math.floor(r() * (BLOCK - context - 1));
    for (let t = 0; t < context; t++) {
      x[b * context + t] = data[o + t];
      y[b * context + t] = data[o + t + 1];
    }
  }
}
