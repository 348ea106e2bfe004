/**
 * Streaming reader of capture files: pcap (either byte order, microsecond or nanosecond
 * timestamps) and pcapng (section header, interface description, enhanced and simple packet
 * blocks; other blocks skipped). The file is read in chunks into one reused buffer, so memory does
 * not grow with the file: a record straddling two chunks is moved to the front before the next
 * read. Every malformed length is an AgentError with the byte offset, never a loop that does not
 * advance.
 */
import { type FileHandle, open } from 'node:fs/promises';
import { AgentError } from '../errors.js';

/** One captured packet; the reader reuses this object and the bytes behind it for the next one. */
export interface RawPacket {
  /** Link type of the interface the packet was captured on (LINKTYPE_* numbers). */
  linkType: number;
  /** Capture time: whole seconds since the epoch and the nanoseconds past them. */
  sec: number;
  nsec: number;
  /** Bytes captured (possibly cut by the snapshot length) and the packet's length on the wire. */
  caplen: number;
  origLen: number;
  /** The bytes: `buf[offset .. offset + caplen)`, valid until the next call to `next()`. */
  buf: Buffer;
  offset: number;
}

/** Which of the two formats a file is in. */
export type CaptureFormat = 'pcap' | 'pcapng';

/** Largest record or block the reader accepts: far above any real snapshot length (256 KiB). */
const MAX_RECORD = 16 * 1024 * 1024;
/** Size of the read buffer; it grows only for a record larger than itself (up to MAX_RECORD). */
const CHUNK = 4 * 1024 * 1024;

const PCAP_MAGIC_US = 0xa1b2c3d4;
const PCAP_MAGIC_NS = 0xa1b23c4d;
const PCAPNG_SHB = 0x0a0d0d0a;
const PCAPNG_BOM = 0x1a2b3c4d;

/** One pcapng interface: its link type and timestamp resolution, with a cache for the conversion. */
interface NgInterface {
  linkType: number;
  /** Timestamp units per second. */
  unitsPerSec: bigint;
  /** For the last high word seen: whole seconds and leftover units of `high << 32`. */
  cachedHigh: number;
  baseSec: number;
  baseRem: number;
  unitsPerSecNum: number;
  /** Nanoseconds per unit (for resolutions other than 1e9). */
  nsPerUnit: number;
}

/** Opens capture files and reads their packets one at a time. */
export class CaptureReader {
  readonly path: string;
  format: CaptureFormat = 'pcap';
  /** pcap: the file's link type; pcapng: the first interface's (for messages). */
  linkType = -1;
  /** Packets returned so far. */
  packets = 0;
  private fh: FileHandle | null = null;
  private buf: Buffer = Buffer.allocUnsafe(CHUNK);
  /** Valid bytes are buf[pos .. end). */
  private pos = 0;
  private end = 0;
  /** File offset of buf[0]. */
  private fileBase = 0;
  private eof = false;
  private le = true;
  private nsRes = false;
  private interfaces: NgInterface[] = [];
  private readonly pkt: RawPacket = {
    linkType: 0,
    sec: 0,
    nsec: 0,
    caplen: 0,
    origLen: 0,
    buf: this.buf,
    offset: 0,
  };

  private constructor(path: string) {
    this.path = path;
  }

  /** Opens `path` and reads its header; rejects with AGT_ERR_PCAP_OPEN or _FORMAT. */
  static async open(path: string): Promise<CaptureReader> {
    const r = new CaptureReader(path);
    try {
      r.fh = await open(path, 'r');
    } catch (err) {
      throw new AgentError('AGT_ERR_PCAP_OPEN', `${path}: ${(err as Error).message}`, { cause: err });
    }
    try {
      await r.readHeader();
    } catch (err) {
      await r.close();
      throw err;
    }
    return r;
  }

  /** Closes the file (idempotent). */
  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    await fh?.close();
  }

  /** Byte offset in the file of the next unread record. */
  get offset(): number {
    return this.fileBase + this.pos;
  }

  private fail(code: 'AGT_ERR_PCAP_FORMAT' | 'AGT_ERR_PCAP_TRUNCATED', at: number, what: string): never {
    throw new AgentError(code, `${this.path}: ${what} at byte ${at}`);
  }

  /**
   * Makes at least `n` bytes available from `pos` (reading more of the file, moving what is left
   * to the front first). Returns false at the end of the file with fewer bytes left.
   */
  private async need(n: number): Promise<boolean> {
    if (this.end - this.pos >= n) return true;
    if (n > this.buf.length) {
      const bigger = Buffer.allocUnsafe(Math.max(n, this.buf.length * 2));
      this.buf.copy(bigger, 0, this.pos, this.end);
      this.buf = bigger;
      this.pkt.buf = bigger;
    } else if (this.pos > 0) {
      this.buf.copy(this.buf, 0, this.pos, this.end);
    }
    this.fileBase += this.pos;
    this.end -= this.pos;
    this.pos = 0;
    while (this.end < n && !this.eof) {
      if (this.fh === null) throw new AgentError('AGT_ERR_CLOSED', `${this.path}: reader closed`);
      let bytesRead: number;
      try {
        ({ bytesRead } = await this.fh.read(this.buf, this.end, this.buf.length - this.end, null));
      } catch (err) {
        throw new AgentError('AGT_ERR_PCAP_OPEN', `${this.path}: ${(err as Error).message}`, { cause: err });
      }
      if (bytesRead === 0) this.eof = true;
      this.end += bytesRead;
    }
    return this.end - this.pos >= n;
  }

  private u32(at: number): number {
    return this.le ? this.buf.readUInt32LE(at) : this.buf.readUInt32BE(at);
  }

  private u16(at: number): number {
    return this.le ? this.buf.readUInt16LE(at) : this.buf.readUInt16BE(at);
  }

  private async readHeader(): Promise<void> {
    if (!(await this.need(4)))
      this.fail(
        this.end === 0 ? 'AGT_ERR_PCAP_FORMAT' : 'AGT_ERR_PCAP_TRUNCATED',
        0,
        'file too short for a header',
      );
    const m = this.buf.readUInt32LE(0);
    if (m === PCAP_MAGIC_US || m === PCAP_MAGIC_NS) {
      this.le = true;
      this.nsRes = m === PCAP_MAGIC_NS;
    } else if (this.buf.readUInt32BE(0) === PCAP_MAGIC_US || this.buf.readUInt32BE(0) === PCAP_MAGIC_NS) {
      this.le = false;
      this.nsRes = this.buf.readUInt32BE(0) === PCAP_MAGIC_NS;
    } else if (m === PCAPNG_SHB) {
      this.format = 'pcapng';
      // The section header is read like any block; its byte-order magic sets the order.
      if (!(await this.need(12))) this.fail('AGT_ERR_PCAP_TRUNCATED', 0, 'pcapng section header cut short');
      const bom = this.buf.readUInt32LE(8);
      if (bom !== PCAPNG_BOM && this.buf.readUInt32BE(8) !== PCAPNG_BOM)
        this.fail('AGT_ERR_PCAP_FORMAT', 8, 'pcapng section header with a bad byte-order magic');
      return;
    } else {
      this.fail(
        'AGT_ERR_PCAP_FORMAT',
        0,
        `unknown magic 0x${this.buf.readUInt32BE(0).toString(16).padStart(8, '0')} (neither pcap nor pcapng)`,
      );
    }
    if (!(await this.need(24))) this.fail('AGT_ERR_PCAP_TRUNCATED', 0, 'pcap file header cut short');
    const major = this.u16(4);
    if (major !== 2) this.fail('AGT_ERR_PCAP_FORMAT', 4, `pcap major version ${major} (expected 2)`);
    // The upper bits of the link-type word carry FCS information (pcap spec); the type is the low 16.
    this.linkType = this.u32(20) & 0xffff;
    this.pos = 24;
  }

  /** The next packet, or null at the end of the file. Throws AgentError on malformed input. */
  async next(): Promise<RawPacket | null> {
    return this.format === 'pcap' ? this.nextPcap() : this.nextNg();
  }

  /**
   * The next packet if its record is already in the buffer (no I/O), `undefined` when a read is
   * needed first (call `next()`): lets the caller run a tight loop over a chunk.
   */
  nextBuffered(): RawPacket | null | undefined {
    if (this.format !== 'pcap') return this.nextNgBuffered();
    const p = this.pos;
    if (this.end - p < 16) return undefined;
    const caplen = this.u32(p + 8);
    if (caplen > MAX_RECORD || this.u32(p + 4) >= (this.nsRes ? 1e9 : 1e6)) return undefined;
    if (this.end - p < 16 + caplen) return undefined;
    return this.takePcap(p, caplen);
  }

  private takePcap(p: number, caplen: number): RawPacket {
    const pkt = this.pkt;
    pkt.linkType = this.linkType;
    pkt.sec = this.u32(p);
    const frac = this.u32(p + 4);
    pkt.nsec = this.nsRes ? frac : frac * 1000;
    pkt.caplen = caplen;
    pkt.origLen = this.u32(p + 12);
    pkt.offset = p + 16;
    this.pos = p + 16 + caplen;
    this.packets++;
    return pkt;
  }

  private async nextPcap(): Promise<RawPacket | null> {
    if (!(await this.need(16))) {
      if (this.end === this.pos) return null;
      this.fail('AGT_ERR_PCAP_TRUNCATED', this.offset, 'pcap record header cut short');
    }
    const p = this.pos;
    const caplen = this.u32(p + 8);
    const frac = this.u32(p + 4);
    if (caplen > MAX_RECORD || (this.nsRes ? frac >= 1e9 : frac >= 1e6))
      this.fail(
        'AGT_ERR_PCAP_FORMAT',
        this.offset,
        `pcap record with captured length ${caplen} or fraction ${frac}`,
      );
    if (!(await this.need(16 + caplen)))
      this.fail('AGT_ERR_PCAP_TRUNCATED', this.offset, `pcap record of ${caplen} bytes cut short`);
    return this.takePcap(this.pos, caplen);
  }

  private nextNgBuffered(): RawPacket | null | undefined {
    // Only enhanced packet blocks take the fast path; everything else goes through nextNg.
    const p = this.pos;
    if (this.end - p < 32) return undefined;
    if (this.u32(p) !== 6) return undefined;
    const len = this.u32(p + 4);
    if (len < 32 || len > MAX_RECORD || len % 4 !== 0 || this.end - p < len) return undefined;
    if (this.u32(p + len - 4) !== len) return undefined;
    return this.takeEpb(p, len);
  }

  private async nextNg(): Promise<RawPacket | null> {
    for (;;) {
      if (!(await this.need(8))) {
        if (this.end === this.pos) return null;
        this.fail('AGT_ERR_PCAP_TRUNCATED', this.offset, 'pcapng block header cut short');
      }
      const at = this.offset;
      let type = this.u32(this.pos);
      if (type === PCAPNG_SHB) {
        // A new section may switch byte order: read its byte-order magic first.
        if (!(await this.need(12)))
          this.fail('AGT_ERR_PCAP_TRUNCATED', at, 'pcapng section header cut short');
        const bom = this.buf.readUInt32LE(this.pos + 8);
        if (bom === PCAPNG_BOM) this.le = true;
        else if (this.buf.readUInt32BE(this.pos + 8) === PCAPNG_BOM) this.le = false;
        else this.fail('AGT_ERR_PCAP_FORMAT', at + 8, 'pcapng section header with a bad byte-order magic');
        type = PCAPNG_SHB;
      }
      const len = this.u32(this.pos + 4);
      if (len < 12 || len % 4 !== 0 || len > MAX_RECORD)
        this.fail('AGT_ERR_PCAP_FORMAT', at, `pcapng block of type ${type} with length ${len}`);
      if (!(await this.need(len)))
        this.fail('AGT_ERR_PCAP_TRUNCATED', at, `pcapng block of ${len} bytes cut short`);
      const p = this.pos;
      if (this.u32(p + len - 4) !== len)
        this.fail(
          'AGT_ERR_PCAP_FORMAT',
          at,
          'pcapng block whose trailing length differs from its leading one',
        );
      switch (type) {
        case PCAPNG_SHB:
          // Interfaces are numbered per section.
          this.interfaces = [];
          this.pos = p + len;
          continue;
        case 1:
          this.addInterface(p, len, at);
          this.pos = p + len;
          continue;
        case 6:
          if (len < 32) this.fail('AGT_ERR_PCAP_FORMAT', at, 'enhanced packet block too short');
          return this.takeEpb(p, len);
        case 3: {
          // Simple packet block: interface 0, no timestamp (time 0), original length only.
          const iface = this.interfaces[0];
          if (iface === undefined)
            this.fail('AGT_ERR_PCAP_FORMAT', at, 'simple packet block before any interface');
          const origLen = this.u32(p + 8);
          const pkt = this.pkt;
          pkt.linkType = iface.linkType;
          pkt.sec = 0;
          pkt.nsec = 0;
          pkt.origLen = origLen;
          pkt.caplen = Math.min(origLen, len - 16);
          pkt.offset = p + 12;
          this.pos = p + len;
          this.packets++;
          return pkt;
        }
        default:
          // Name resolution, statistics, custom, journal blocks: nothing for us.
          this.pos = p + len;
      }
    }
  }

  private takeEpb(p: number, len: number): RawPacket {
    const ifId = this.u32(p + 8);
    const iface = this.interfaces[ifId];
    if (iface === undefined)
      this.fail(
        'AGT_ERR_PCAP_FORMAT',
        this.fileBase + p,
        `packet on interface ${ifId}, which no block described`,
      );
    const caplen = this.u32(p + 20);
    if (caplen > len - 32)
      this.fail('AGT_ERR_PCAP_FORMAT', this.fileBase + p, `packet of ${caplen} bytes in a block of ${len}`);
    const high = this.u32(p + 12);
    const low = this.u32(p + 16);
    const pkt = this.pkt;
    if (high !== iface.cachedHigh) {
      // A high word changes every 4.3 s at nanosecond resolution: the exact split of high << 32
      // into seconds and units is done then, in BigInt; each packet adds its low word in doubles.
      const base = BigInt(high) << 32n;
      iface.cachedHigh = high;
      iface.baseSec = Number(base / iface.unitsPerSec);
      iface.baseRem = Number(base % iface.unitsPerSec);
    }
    const t = iface.baseRem + low;
    const u = iface.unitsPerSecNum;
    const extra = Math.floor(t / u);
    pkt.sec = iface.baseSec + extra;
    const rem = t - extra * u;
    pkt.nsec = u === 1e9 ? rem : Math.floor(rem * iface.nsPerUnit);
    pkt.linkType = iface.linkType;
    pkt.caplen = caplen;
    pkt.origLen = this.u32(p + 24);
    pkt.offset = p + 28;
    this.pos = p + len;
    this.packets++;
    return pkt;
  }

  private addInterface(p: number, len: number, at: number): void {
    if (len < 20) this.fail('AGT_ERR_PCAP_FORMAT', at, 'interface description block too short');
    const linkType = this.u16(p + 8);
    let unitsPerSec = 1_000_000n;
    // Options: code, length, value padded to 4 bytes; if_tsresol (9) sets the resolution.
    let o = p + 16;
    const stop = p + len - 4;
    while (o + 4 <= stop) {
      const code = this.u16(o);
      const olen = this.u16(o + 2);
      if (code === 0) break;
      if (o + 4 + olen > stop)
        this.fail('AGT_ERR_PCAP_FORMAT', this.fileBase + o, 'interface option runs past its block');
      if (code === 9 && olen >= 1) {
        const r = this.buf[o + 4]!;
        const exp = r & 0x7f;
        if (exp > 63) this.fail('AGT_ERR_PCAP_FORMAT', this.fileBase + o, `timestamp resolution ${r}`);
        unitsPerSec = r & 0x80 ? 1n << BigInt(exp) : 10n ** BigInt(exp);
        if (unitsPerSec === 0n || unitsPerSec > 1n << 52n)
          this.fail('AGT_ERR_PCAP_FORMAT', this.fileBase + o, `timestamp resolution ${r} out of range`);
      }
      o += 4 + ((olen + 3) & ~3);
    }
    if (this.interfaces.length === 0 && this.linkType < 0) this.linkType = linkType;
    const u = Number(unitsPerSec);
    this.interfaces.push({
      linkType,
      unitsPerSec,
      cachedHigh: -1,
      baseSec: 0,
      baseRem: 0,
      unitsPerSecNum: u,
      nsPerUnit: 1e9 / u,
    });
  }
}
