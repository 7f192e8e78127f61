// Reference float16 / bfloat16 conversions written from the IEEE-754 definitions (round to nearest, ties to
// even), independent of the native codecs, for checking results exactly.

function roundHalfEven(q: number): number {
  const f = Math.floor(q);
  const d = q - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** The float16 bits nearest to `v` (ties to even; overflow to infinity; NaN as 0x7e00). */
export function toF16(v: number): number {
  if (Number.isNaN(v)) return 0x7e00;
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
  const a = Math.abs(v);
  if (a >= 65520) return sign | 0x7c00;
  if (a < 2 ** -14) return sign | roundHalfEven(a / 2 ** -24); // 1024 becomes the smallest normal, as it should
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  let m = roundHalfEven((a / 2 ** e - 1) * 1024);
  if (m === 1024) {
    m = 0;
    e++;
  }
  return e + 15 >= 31 ? sign | 0x7c00 : sign | ((e + 15) << 10) | m;
}

export function fromF16(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const e = (bits >> 10) & 0x1f;
  const m = bits & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

const view = new DataView(new ArrayBuffer(4));

/** The bfloat16 bits nearest to the float32 value `v` (ties to even; NaN as 0x7fc0). */
export function toBF16(v: number): number {
  if (Number.isNaN(v)) return 0x7fc0;
  view.setFloat32(0, v, true);
  const bits = view.getUint32(0, true);
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

export function fromBF16(bits: number): number {
  view.setUint32(0, (bits << 16) >>> 0, true);
  return view.getFloat32(0, true);
}
