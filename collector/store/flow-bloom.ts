/**
 * A bloom filter of the flowIds of one profile block, so that connections/:flowId decodes only the
 * blocks that may hold the connection: about 10 bits a profile and 7 probes, near 1 % false
 * positives. flowIds are unsigned 64-bit; numbers (up to 2^53) and bigints hash alike.
 */

const PROBES = 7;

function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The two 32-bit halves of a flowId. */
function halves(v: number | bigint): [number, number] {
  if (typeof v === 'bigint') {
    const u = BigInt.asUintN(64, v);
    return [Number(u >> 32n), Number(u & 0xffffffffn)];
  }
  return [Math.floor(v / 4294967296) >>> 0, v >>> 0];
}

function probes(v: number | bigint, mask: number, f: (bit: number) => boolean): boolean {
  const [hi, lo] = halves(v);
  const h1 = fmix(lo ^ Math.imul(hi, 0x9e3779b1));
  const h2 = fmix(hi ^ Math.imul(lo ^ 0x5bd1e995, 0x27d4eb2f)) | 1;
  for (let i = 0; i < PROBES; i++) if (!f(((h1 + Math.imul(i, h2)) >>> 0) & mask)) return false;
  return true;
}

/** Builds the filter of a block's flowIds (null entries skipped). */
export function buildBloom(flowIds: Iterable<number | bigint>, count: number): Uint8Array {
  let bits = 64;
  while (bits < count * 10) bits *= 2;
  const out = new Uint8Array(bits / 8);
  const mask = bits - 1;
  for (const v of flowIds)
    probes(v, mask, (b) => {
      out[b >>> 3]! |= 1 << (b & 7);
      return true;
    });
  return out;
}

/** False when the block surely holds no profile of this flowId. */
export function bloomMayHave(bloom: Uint8Array, v: number | bigint): boolean {
  const mask = bloom.length * 8 - 1;
  return probes(v, mask, (b) => (bloom[b >>> 3]! & (1 << (b & 7))) !== 0);
}
