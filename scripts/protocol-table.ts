#!/usr/bin/env node
/**
 * Prints the table of control messages of docs/protocol.md from the one schema (lib/protocol/messages.ts):
 * `node --import tsx scripts/protocol-table.ts`. test/unit/structure.test.ts checks that the doc holds it.
 */
import { MASTER_MESSAGES, MESSAGES, MessageType, PEER_MESSAGES } from '../lib/protocol';
import type { Field } from '../lib/protocol/schema';

function describe(f: Field<unknown>): string {
  const t = f.type;
  switch (t.kind) {
    case 'uint': return t.max === Number.MAX_SAFE_INTEGER ? 'uint' : `uint ${t.min}..${t.max}`;
    case 'string': return t.values ? t.values.map((v) => `"${v}"`).join(' \\| ') : `string ≤ ${t.maxLength}`;
    case 'bytes': return t.length === undefined ? 'bytes' : `${t.length} bytes`;
    case 'bool': return 'bool';
    case 'peers': return '[{ id, host, port }]';
    case 'custom': return t.what;
  }
}

function direction(type: MessageType): string {
  if (type === 'hello' || type === 'register') return 'peer → master (handshake)';
  if (type === 'check') return '`tccl check` → master (handshake, instead of `register`)';
  if (type === 'checkResult') return 'master → `tccl check`';
  if (type === 'challenge' || type === 'welcome') return 'master → peer (handshake)';
  if (type === 'hb') return 'both ways';
  if (type === 'kx') return 'both ways (handshake, with a token: the key exchange)';
  if (type === 'integrity') return 'both ways (sealed: a frame failed its tag, the sender closes)';
  if ((PEER_MESSAGES as readonly string[]).includes(type)) return 'peer → master';
  if ((MASTER_MESSAGES as readonly string[]).includes(type)) return 'master → peer';
  return '?';
}

/** The markdown table: one row per message type, its direction and fields (optional ones with `?`). */
export function messageTable(): string {
  const rows = (Object.keys(MESSAGES) as MessageType[]).map((type) => {
    const fields = Object.entries(MESSAGES[type] as Record<string, Field<unknown>>)
      .map(([name, f]) => `\`${name}${f.optional ? '?' : ''}\`: ${describe(f)}`)
      .join('; ');
    return `| \`${type}\` | ${direction(type)} | ${fields || '(none)'} |`;
  });
  return ['| `t` | direction | fields |', '| --- | --- | --- |', ...rows].join('\n');
}

if (require.main === module) process.stdout.write(messageTable() + '\n');
