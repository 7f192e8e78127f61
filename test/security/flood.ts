// A flood of half-open connections, run as its own process (its descriptor limit set by the caller): `count`
// connections to host:port, each from one of many loopback source addresses (127.0.x.y), each sending one byte
// and holding; one the server closes is opened again at once; after `durationMs` everything is reset (RST, so no
// TIME_WAIT is left) and it exits by itself. Prints JSON lines: {ev:'held', open} once `count` are open or the
// opening pass ended, then {ev:'done', opened, closedByServer, maxOpen}.
import * as net from 'node:net';

const [host, portS, countS, durationS, firstS] = process.argv.slice(2);
const port = Number(portS);
const count = Number(countS);
const durationMs = Number(durationS);
const first = Number(firstS ?? 2); // first source address index (two floods use different ranges)
const sockets = new Set<net.Socket>();
let opened = 0;
let closedByServer = 0;
let maxOpen = 0;
let stopping = false;
let i = 0;

const say = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);

function source(): string {
  const k = first + (i++ % 2000);
  return `127.0.${10 + Math.floor(k / 250)}.${1 + (k % 250)}`;
}

function open(): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port, localAddress: source() });
    sockets.add(s);
    let settled = false;
    const done = () => { if (!settled) { settled = true; resolve(); } };
    s.on('connect', () => {
      opened++;
      maxOpen = Math.max(maxOpen, sockets.size);
      s.write(Buffer.from([0]));
      done();
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      sockets.delete(s);
      done();
      if (stopping) return;
      closedByServer++;
      setImmediate(() => void open()); // at once, as an attacker would
    });
  });
}

async function main(): Promise<void> {
  setTimeout(() => {
    stopping = true;
    for (const s of sockets) s.resetAndDestroy();
    say({ ev: 'done', opened, closedByServer, maxOpen });
    setTimeout(() => process.exit(0), 200);
  }, durationMs);
  // Open `count`, at most 500 connecting at a time (a backlog that is full delays the SYNs of the others).
  let started = 0;
  const heldAt = Date.now() + Math.min(15_000, durationMs / 2);
  while (started < count && !stopping) {
    const batch = Math.min(500, count - started);
    started += batch;
    await Promise.race([Promise.all(Array.from({ length: batch }, () => open())), new Promise((r) => setTimeout(r, 1000))]);
    if (Date.now() > heldAt) break;
  }
  while (opened < count && Date.now() < heldAt) await new Promise((r) => setTimeout(r, 100));
  say({ ev: 'held', open: sockets.size, opened, started });
}

void main();
