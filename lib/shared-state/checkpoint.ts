/**
 * Checkpoint files of a {@link SharedState}: atomic writes (temp file, fsync, rename, fsync of the directory) and a
 * self-describing, verified header. Layout (all integers little-endian):
 *
 * ```
 *  0  magic            8 bytes  "TCCLSTAT"
 *  8  format version   u32      1
 * 12  header length H  u32
 * 16  header checksum  u64      contentHash of the H header bytes
 * 24  header           H bytes  UTF-8 JSON: { revision, entries: [{ key, dtype, length, byteLength, offset,
 *                               hash, allowContentInequality }] }
 *     entry data       each entry at its `offset` (64-byte aligned), zero padding in between; the file ends
 *                      exactly where the last entry ends
 * ```
 *
 * `hash` is the entry's contentHash as 16 lowercase hex digits; every entry is hashed in a checkpoint, including
 * allowContentInequality ones. All I/O goes through fs/promises FileHandles in chunks and the hashes run on
 * native threads, so saving or loading gigabytes never blocks the event loop.
 */
import * as fsp from 'node:fs/promises';
import * as nodePath from 'node:path';
import { randomBytes } from 'node:crypto';
import { native } from '../binding';
import { DType, DTYPE_CODES, arrayTypeOf, dtypeBytes } from '../dtype';
import { StateError } from '../errors';
import { STATE_ERROR_CODES, StateEntry, checkRevision } from './entry';
import { hashHex } from './hash';

/** What a checkpoint holds: a SharedState's revision and entries. */
export interface CheckpointContents {
  revision: number;
  entries: readonly StateEntry[];
}

export const CHECKPOINT_MAGIC = 'TCCLSTAT';
export const CHECKPOINT_VERSION = 1;
const PREFIX_BYTES = 24;
const ALIGN = 64;
const IO_CHUNK = 32 << 20;
const MAX_HEADER = 256 << 20;

interface HeaderEntry {
  key: string;
  dtype: DType;
  length: number;
  byteLength: number;
  offset: number;
  hash: string;
  allowContentInequality: boolean;
}

interface Header {
  revision: number;
  entries: HeaderEntry[];
}

const alignUp = (n: number) => Math.ceil(n / ALIGN) * ALIGN;

function bytesOf(data: ArrayBufferView): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

async function writeAll(fh: fsp.FileHandle, data: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < data.byteLength; ) {
    const n = Math.min(IO_CHUNK, data.byteLength - done);
    const { bytesWritten } = await fh.write(data, done, n, position + done);
    if (bytesWritten <= 0) throw new Error(`short write at byte ${position + done}`);
    done += bytesWritten;
  }
}

async function readAll(fh: fsp.FileHandle, into: Uint8Array, position: number): Promise<number> {
  let done = 0;
  while (done < into.byteLength) {
    const n = Math.min(IO_CHUNK, into.byteLength - done);
    const { bytesRead } = await fh.read(into, done, n, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/** See {@link SharedState.save}. */
export async function saveCheckpoint(state: { revision: number; entries(): readonly StateEntry[] }, path: string): Promise<void> {
  if (typeof path !== 'string' || path.length === 0) throw new TypeError('Expected a checkpoint path');
  const entries = state.entries();
  const totalBytes = entries.reduce((n, e) => n + e.data.byteLength, 0);
  const hashes: string[] = [];
  for (const e of entries) hashes.push(hashHex(await native().contentHash(bytesOf(e.data))));
  const header: Header = { revision: state.revision, entries: [] };
  // Offsets depend on the header length, which depends on the offsets' digits: size the header with
  // worst-case offsets first, then fix it.
  const layout = (start: number) => {
    let at = start;
    header.entries = entries.map((e, i) => {
      at = alignUp(at);
      const h = {
        key: e.key, dtype: e.dtype, length: e.data.length, byteLength: e.data.byteLength, offset: at,
        hash: hashes[i], allowContentInequality: e.allowContentInequality,
      };
      at += e.data.byteLength;
      return h;
    });
    return at;
  };
  layout(Number.MAX_SAFE_INTEGER - totalBytes - ALIGN * (entries.length + 1));
  const maxHeaderBytes = Buffer.byteLength(JSON.stringify(header));
  layout(alignUp(PREFIX_BYTES + maxHeaderBytes));
  const json = Buffer.from(JSON.stringify(header).padEnd(maxHeaderBytes, ' '));
  const prefix = Buffer.alloc(PREFIX_BYTES);
  prefix.write(CHECKPOINT_MAGIC, 0, 'latin1');
  prefix.writeUInt32LE(CHECKPOINT_VERSION, 8);
  prefix.writeUInt32LE(json.byteLength, 12);
  prefix.writeBigUInt64LE(native().contentHashSync(json), 16);

  const dir = nodePath.dirname(nodePath.resolve(path));
  const tmp = nodePath.join(dir, `.${nodePath.basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fh = await fsp.open(tmp, 'wx', 0o644);
  let ok = false;
  try {
    await writeAll(fh, prefix, 0);
    await writeAll(fh, json, PREFIX_BYTES);
    let end = PREFIX_BYTES + json.byteLength;
    for (let i = 0; i < entries.length; i++) {
      const h = header.entries[i];
      if (h.offset > end) await writeAll(fh, new Uint8Array(h.offset - end), end);
      await writeAll(fh, bytesOf(entries[i].data), h.offset);
      end = h.offset + h.byteLength;
    }
    await fh.truncate(end);
    await fh.sync();
    ok = true;
  } finally {
    await fh.close();
    if (!ok) await fsp.rm(tmp, { force: true });
  }
  try {
    await fsp.rename(tmp, path);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
  // Make the rename itself durable. Directories cannot be opened for fsync on Windows: skip there.
  if (process.platform !== 'win32') {
    const d = await fsp.open(dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  }
}

function corrupt(path: string, why: string): StateError {
  return new StateError(STATE_ERROR_CODES.corrupt, `Checkpoint ${path} is corrupt: ${why}`);
}

function parseHeader(path: string, json: Buffer, fileSize: number): Header {
  let h: Header;
  try {
    h = JSON.parse(json.toString('utf8')) as Header;
  } catch {
    throw corrupt(path, 'the header is not valid JSON');
  }
  if (typeof h !== 'object' || h === null || !Array.isArray(h.entries)) throw corrupt(path, 'the header has no entry list');
  try {
    checkRevision(h.revision, 'header.revision');
  } catch {
    throw corrupt(path, `bad revision ${String(h.revision)}`);
  }
  const keys = new Set<string>();
  let end = PREFIX_BYTES + json.byteLength;
  for (const [i, e] of h.entries.entries()) {
    const what = `entry #${i}`;
    if (typeof e !== 'object' || e === null || typeof e.key !== 'string' || e.key.length === 0) throw corrupt(path, `${what} has no key`);
    if (keys.has(e.key)) throw corrupt(path, `key "${e.key}" appears twice`);
    keys.add(e.key);
    if (typeof e.dtype !== 'string' || !(e.dtype in DTYPE_CODES)) throw corrupt(path, `entry "${e.key}" has unknown dtype ${JSON.stringify(e.dtype)}`);
    if (!Number.isSafeInteger(e.length) || e.length < 0 || e.byteLength !== e.length * dtypeBytes(e.dtype)) {
      throw corrupt(path, `entry "${e.key}" has inconsistent length ${String(e.length)} / byteLength ${String(e.byteLength)}`);
    }
    if (!Number.isSafeInteger(e.offset) || e.offset < end || e.offset % ALIGN !== 0) {
      throw corrupt(path, `entry "${e.key}" has a bad offset ${String(e.offset)}`);
    }
    if (typeof e.hash !== 'string' || !/^[0-9a-f]{16}$/.test(e.hash)) throw corrupt(path, `entry "${e.key}" has a bad hash`);
    end = e.offset + e.byteLength;
  }
  if (fileSize < end) {
    throw new StateError(STATE_ERROR_CODES.truncated, `Checkpoint ${path} is truncated: ${fileSize} bytes, the header describes ${end}`);
  }
  if (fileSize > end) throw corrupt(path, `${fileSize - end} unexpected bytes after the last entry`);
  return h;
}

/** See {@link SharedState.load}. */
export async function loadCheckpoint(path: string): Promise<CheckpointContents> {
  if (typeof path !== 'string' || path.length === 0) throw new TypeError('Expected a checkpoint path');
  const fh = await fsp.open(path, 'r');
  try {
    const { size } = await fh.stat();
    const prefix = Buffer.alloc(PREFIX_BYTES);
    const got = await readAll(fh, prefix, 0);
    const magic = prefix.subarray(0, Math.min(got, 8)).toString('latin1');
    if (magic !== CHECKPOINT_MAGIC.slice(0, magic.length) || got === 0) {
      throw new StateError(STATE_ERROR_CODES.badMagic, `${path} is not a TCCL shared-state checkpoint (no "${CHECKPOINT_MAGIC}" magic)`);
    }
    if (got < PREFIX_BYTES) {
      throw new StateError(STATE_ERROR_CODES.truncated, `Checkpoint ${path} is truncated: ${got} bytes, shorter than its ${PREFIX_BYTES}-byte prefix`);
    }
    const version = prefix.readUInt32LE(8);
    if (version !== CHECKPOINT_VERSION) {
      throw new StateError(
        STATE_ERROR_CODES.badVersion,
        `Checkpoint ${path} has format version ${version}; this TCCL reads version ${CHECKPOINT_VERSION}`,
      );
    }
    const headerBytes = prefix.readUInt32LE(12);
    if (headerBytes === 0 || headerBytes > MAX_HEADER) throw corrupt(path, `impossible header length ${headerBytes}`);
    if (PREFIX_BYTES + headerBytes > size) {
      throw new StateError(STATE_ERROR_CODES.truncated, `Checkpoint ${path} is truncated inside its header (${size} bytes)`);
    }
    const json = Buffer.alloc(headerBytes);
    await readAll(fh, json, PREFIX_BYTES);
    if (native().contentHashSync(json) !== prefix.readBigUInt64LE(16)) throw corrupt(path, 'the header checksum does not match');
    const header = parseHeader(path, json, size);
    const entries: StateEntry[] = [];
    for (const e of header.entries) {
      const data = new (arrayTypeOf(e.dtype))(e.length);
      const view = bytesOf(data);
      const n = await readAll(fh, view, e.offset);
      if (n !== e.byteLength) {
        throw new StateError(STATE_ERROR_CODES.truncated, `Checkpoint ${path} is truncated inside entry "${e.key}"`);
      }
      const hash = hashHex(await native().contentHash(view));
      if (hash !== e.hash) {
        throw new StateError(
          STATE_ERROR_CODES.hashMismatch,
          `Checkpoint ${path} is corrupt: entry "${e.key}" hashes to ${hash}, the header says ${e.hash}`,
        );
      }
      entries.push({ key: e.key, data, dtype: e.dtype, allowContentInequality: e.allowContentInequality });
    }
    return { revision: header.revision, entries };
  } finally {
    await fh.close();
  }
}
