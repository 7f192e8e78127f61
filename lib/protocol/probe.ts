/**
 * The first line of a `tccl check` probe connection (lib/master/check.ts, lib/peer/probe.ts, lib/cli/check.ts):
 * `TCCLPROBE1 <nonce hex> <sender id>\n`, then the burst of bytes. The nonce is the one the checker chose, so its
 * listener counts only connections the master asked for.
 */
const MAGIC = 'TCCLPROBE1';
/** Longest header accepted. */
export const MAX_PROBE_HEADER = 400;

export function probeHeader(nonce: Uint8Array, sender: string): Buffer {
  return Buffer.from(`${MAGIC} ${Buffer.from(nonce).toString('hex')} ${sender.replace(/\s/g, '_').slice(0, 300)}\n`);
}

/** The sender of a header line (without its newline), or undefined when it is not a probe for `nonce`. */
export function parseProbeHeader(line: string, nonce: Uint8Array): string | undefined {
  const [magic, hex, sender] = line.split(' ');
  if (magic !== MAGIC || hex !== Buffer.from(nonce).toString('hex') || !sender) return undefined;
  return sender;
}
