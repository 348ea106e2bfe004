/**
 * A minimal reader of 64-bit little-endian ELF relocatable objects, as clang writes BPF objects:
 * section headers and the symbol table, nothing else. Malformed input raises NAT_ERR_SPEC.
 */
import { NativeError } from './errors.js';

/** One ELF section. */
export interface ElfSection {
  index: number;
  name: string;
  type: number;
  flags: bigint;
  offset: number;
  size: number;
  /** The section's bytes (empty for NOBITS sections such as .bss). */
  data: Buffer;
}

/** One symbol of .symtab. */
export interface ElfSymbol {
  name: string;
  /** STT_* (low nibble of st_info). */
  type: number;
  /** STB_* (high nibble of st_info). */
  bind: number;
  sectionIndex: number;
  value: number;
  size: number;
}

/** A parsed ELF file: its sections and symbols. */
export interface ElfFile {
  sections: ElfSection[];
  symbols: ElfSymbol[];
  section(name: string): ElfSection | undefined;
}

/** SHF_EXECINSTR: the section holds code (BPF programs). */
export const SHF_EXECINSTR = 0x4n;
/** STT_FUNC: a function symbol (a BPF program's entry). */
export const STT_FUNC = 2;
/** STT_OBJECT: a data symbol (a map or a global variable). */
export const STT_OBJECT = 1;

const SHT_SYMTAB = 2;
const SHT_NOBITS = 8;

function fail(detail: string): never {
  throw new NativeError('NAT_ERR_SPEC', detail);
}

function cString(buf: Buffer, at: number): string {
  if (at >= buf.length) return '';
  const end = buf.indexOf(0, at);
  return buf.toString('latin1', at, end < 0 ? buf.length : end);
}

/** Parses an ELF64 little-endian object. */
export function parseElf(buf: Buffer): ElfFile {
  if (buf.length < 64 || buf.readUInt32BE(0) !== 0x7f454c46) fail('not an ELF file');
  if (buf[4] !== 2 || buf[5] !== 1) fail('not a 64-bit little-endian ELF file');
  const shoff = Number(buf.readBigUInt64LE(0x28));
  const shentsize = buf.readUInt16LE(0x3a);
  const shnum = buf.readUInt16LE(0x3c);
  const shstrndx = buf.readUInt16LE(0x3e);
  if (shentsize < 64 || shoff + shnum * shentsize > buf.length || shstrndx >= shnum)
    fail('bad section table');

  const raw = [];
  for (let i = 0; i < shnum; i++) {
    const o = shoff + i * shentsize;
    const type = buf.readUInt32LE(o + 4);
    const offset = Number(buf.readBigUInt64LE(o + 0x18));
    const size = Number(buf.readBigUInt64LE(o + 0x20));
    if (type !== SHT_NOBITS && offset + size > buf.length) fail(`section ${i} runs past the end of the file`);
    raw.push({
      nameOff: buf.readUInt32LE(o),
      type,
      flags: buf.readBigUInt64LE(o + 8),
      offset,
      size,
      link: buf.readUInt32LE(o + 0x28),
    });
  }
  const shstr = raw[shstrndx]!;
  const names = buf.subarray(shstr.offset, shstr.offset + shstr.size);
  const sections: ElfSection[] = raw.map((s, index) => ({
    index,
    name: cString(names, s.nameOff),
    type: s.type,
    flags: s.flags,
    offset: s.offset,
    size: s.size,
    data: s.type === SHT_NOBITS ? Buffer.alloc(0) : buf.subarray(s.offset, s.offset + s.size),
  }));

  const symbols: ElfSymbol[] = [];
  const symtab = raw.findIndex((s) => s.type === SHT_SYMTAB);
  if (symtab >= 0) {
    const st = sections[symtab]!;
    const strs = sections[raw[symtab]!.link];
    if (!strs) fail('symbol table without string table');
    for (let o = 0; o + 24 <= st.data.length; o += 24) {
      const info = st.data[o + 4]!;
      symbols.push({
        name: cString(strs.data, st.data.readUInt32LE(o)),
        type: info & 0xf,
        bind: info >> 4,
        sectionIndex: st.data.readUInt16LE(o + 6),
        value: Number(st.data.readBigUInt64LE(o + 8)),
        size: Number(st.data.readBigUInt64LE(o + 16)),
      });
    }
  }
  return { sections, symbols, section: (name) => sections.find((s) => s.name === name) };
}
