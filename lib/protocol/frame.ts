/**
 * Control-plane framing: every message is a 4-byte big-endian length followed by that many bytes of msgpack.
 * The decoder refuses a frame above `maxFrameBytes` as soon as it reads the length, so a stranger cannot make a
 * process buffer an arbitrary amount, and refuses bytes that do not decode to exactly one msgpack map.
 */
import { Packr, Unpackr } from 'msgpackr';
import { IntegrityError, ProtocolError } from '../errors';

/** Default largest control frame (1 MiB); a ring of thousands of peers fits in a few hundred KiB. */
export const DEFAULT_MAX_FRAME_BYTES = 1 << 20;
const HEADER_BYTES = 4;

// Plain msgpack only: no records/structures, no extension types beyond msgpackr's basics; maps become objects.
const packr = new Packr({ useRecords: false, moreTypes: false, structuredClone: false, variableMapSize: true });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, structuredClone: false });

/** Encodes one message as a frame (length prefix + msgpack). */
export function encodeFrame(message: object, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES): Buffer {
  const body = packr.pack(message);
  if (body.length > maxFrameBytes) {
    throw new ProtocolError(`Control message of ${body.length} bytes exceeds the maximum frame size of ${maxFrameBytes} bytes`);
  }
  const frame = Buffer.allocUnsafe(HEADER_BYTES + body.length);
  frame.writeUInt32BE(body.length, 0);
  body.copy(frame, HEADER_BYTES);
  return frame;
}

/** Decodes one frame body; throws ProtocolError unless it is exactly one msgpack map. */
export function decodeBody(body: Buffer): Record<string, unknown> {
  let values: unknown[];
  try {
    values = unpackr.unpackMultiple(body) as unknown[];
  } catch (err) {
    throw new ProtocolError(`Control frame is not valid msgpack: ${(err as Error).message}`, { cause: err });
  }
  if (!values || values.length !== 1) throw new ProtocolError(`Control frame holds ${values?.length ?? 0} msgpack values, expected exactly 1`);
  const v = values[0];
  if (typeof v !== 'object' || v === null || Array.isArray(v) || Buffer.isBuffer(v) || ArrayBuffer.isView(v)) {
    throw new ProtocolError('Control frame is not a msgpack map');
  }
  return v as Record<string, unknown>;
}

/** Incremental frame decoder: feed it socket chunks, get whole message bodies back. */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /**
   * Set once frames arrive sealed (lib/protocol/secure.ts): opens one sealed body given its length header. It
   * applies from the next frame {@link next} reads, so a handshake can switch it between two frames of one chunk.
   */
  opener?: (header: Buffer, sealed: Buffer) => Buffer;
  /** Bytes a sealed frame adds (its tag), allowed above `maxFrameBytes` once the opener is set. */
  sealOverhead = 0;

  /** `maxFrameBytes` may change between chunks (small before a handshake, larger after: lib/master/gate.ts). */
  constructor(public maxFrameBytes = DEFAULT_MAX_FRAME_BYTES) {}

  /** Returns the complete messages in the bytes so far; throws ProtocolError on an oversized or bad frame. */
  push(chunk: Buffer): Record<string, unknown>[] {
    this.feed(chunk);
    const out: Record<string, unknown>[] = [];
    for (let m = this.next(); m; m = this.next()) out.push(m);
    return out;
  }

  /** Buffers a chunk; {@link next} takes the messages out one by one. */
  feed(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /** The next complete message, or undefined until more bytes arrive; throws on an oversized, bad or forged frame. */
  next(): Record<string, unknown> | undefined {
    if (this.buffered < HEADER_BYTES) return undefined;
    const head = this.peek(HEADER_BYTES);
    const len = head.readUInt32BE(0);
    const max = this.maxFrameBytes + (this.opener ? this.sealOverhead : 0);
    // Once frames are sealed, a length that cannot be right was altered on the way (the length is authenticated).
    const Bad = this.opener ? IntegrityError : ProtocolError;
    if (len > max) {
      throw new Bad(`Control frame of ${len} bytes exceeds the maximum frame size of ${max} bytes`);
    }
    if (len === 0) throw new Bad('Empty control frame');
    if (this.buffered < HEADER_BYTES + len) return undefined;
    const all = this.take(HEADER_BYTES + len);
    const body = all.subarray(HEADER_BYTES);
    return decodeBody(this.opener ? this.opener(all.subarray(0, HEADER_BYTES), body) : body);
  }

  private peek(n: number): Buffer {
    if (this.chunks[0].length < n) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0].subarray(0, n);
  }

  private take(n: number): Buffer {
    if (this.chunks[0].length < n) this.chunks = [Buffer.concat(this.chunks)];
    const first = this.chunks[0];
    const out = first.subarray(0, n);
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.buffered -= n;
    return out;
  }
}
