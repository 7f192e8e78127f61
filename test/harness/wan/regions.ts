/**
 * Emulated regions for the topology tests and bench: n hosts, each in a region, with one link per ordered pair
 * (`inside` a region or `between` two) and, per ordered pair of regions, one shared cap that every link between
 * them draws on: the ocean cable that all transatlantic flows share, which is why a ring that crosses it often
 * is slow. Each host advertises one emulated address; the emulator tells the dialling host by its source
 * address (every host dials from its own address: the `sourceAddress` option), so the bytes from i to j cross
 * link i -> j whoever dials. Linux only (127.x.y.z addresses).
 */
import { LinkSpec, WanEmulator, linkId } from './emulator';

export interface RegionsSpec {
  /** Link inside a region (per ordered pair). */
  inside: LinkSpec;
  /** Link between two regions (per ordered pair). */
  between: LinkSpec;
  /** Capacity shared by all links from one region to another, Mbit/s (default: none shared). */
  betweenSharedMbps?: number;
}

/** Where host i listens, what it advertises and the address it dials from. */
export interface RegionHost {
  listenHost: string;
  dataPort: number;
  advertiseAddress: string;
  sourceAddress: string;
}

/** Link ids of the default (unshaped) route links and the region caps, clear of linkId(s, d, n) for n <= 64. */
const PLAIN_LINK = 9000;
const regionCap = (a: number, b: number) => 9100 + a * 32 + b;

/** Sets up the links and routes; `block` picks the address range (127.0.block.x emulated, block + 1 real). */
export async function regionWan(emu: WanEmulator, regionOf: number[], spec: RegionsSpec, block = 50): Promise<RegionHost[]> {
  const n = regionOf.length;
  if (n > 64) throw new Error('regionWan takes at most 64 hosts');
  await emu.setLink(PLAIN_LINK, { delayMs: 0 });
  const regions = [...new Set(regionOf)];
  if (spec.betweenSharedMbps !== undefined) {
    for (const a of regions) for (const b of regions) if (a !== b) await emu.setShared(regionCap(a, b), spec.betweenSharedMbps);
  }
  for (let s = 0; s < n; s++) {
    for (let d = 0; d < n; d++) {
      if (s === d) continue;
      const inside = regionOf[s] === regionOf[d];
      const l = inside ? spec.inside : spec.between;
      const shared = !inside && spec.betweenSharedMbps !== undefined ? [...(l.shared ?? []), regionCap(regionOf[s], regionOf[d])] : l.shared;
      await emu.setLink(linkId(s, d, n), { ...l, shared });
    }
  }
  const hosts: RegionHost[] = [];
  for (let d = 0; d < n; d++) {
    const real = `127.0.${block + 1}.${d + 1}`;
    const r = await emu.addRoute({ listenHost: `127.0.${block}.${d + 1}`, targetHost: real, targetPort: 0, fwdLink: PLAIN_LINK, revLink: PLAIN_LINK });
    for (let s = 0; s < n; s++) if (s !== d) await emu.via(r.id, `127.0.${block + 1}.${s + 1}`, linkId(s, d, n), linkId(d, s, n));
    hosts.push({ listenHost: real, dataPort: r.port, advertiseAddress: `127.0.${block}.${d + 1}`, sourceAddress: real });
  }
  return hosts;
}

/** Ring links between different regions. */
export function crossings(order: readonly number[], regionOf: readonly number[]): number {
  let c = 0;
  for (let k = 0; k < order.length; k++) if (regionOf[order[k]] !== regionOf[order[(k + 1) % order.length]]) c++;
  return c;
}
