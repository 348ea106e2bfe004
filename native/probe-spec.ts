/**
 * ProbeSpec: what a compiled .bpf.o holds (programs and how each attaches, maps, `const volatile`
 * knobs, the BTF of its types), read in TypeScript as plain data. It needs no privileges and no
 * addon, so loaders can decide before loading and tests can check the object without a kernel.
 */
import { readFileSync } from 'node:fs';
import { Btf } from './btf.js';
import { type ElfFile, parseElf, SHF_EXECINSTR, STT_FUNC, STT_OBJECT } from './elf.js';
import { NativeError } from './errors.js';

/** How a program attaches, from its ELF section name (libbpf's conventions). */
export type AttachKind = 'cgroup' | 'tp_btf' | 'fentry' | 'fexit' | 'tracepoint' | 'raw_tp' | 'iter' | 'auto';

/** One BPF program of the object. */
export interface ProgramSpec {
  name: string;
  section: string;
  kind: AttachKind;
  /** The hook: tracepoint or function name, "category/name" for tracepoints, iterator target. */
  target: string;
}

/** One `const volatile` global: a knob the loader sets before load. */
export interface KnobSpec {
  name: string;
  /** Byte offset in .rodata. */
  offset: number;
  /** Size in bytes (1, 2, 4 or 8). */
  size: number;
}

/** The plain-data description of a BPF object file. */
export interface ProbeSpec {
  path: string;
  license: string;
  programs: readonly ProgramSpec[];
  maps: readonly string[];
  knobs: readonly KnobSpec[];
  /** Initial contents of .rodata (the knobs' defaults). */
  rodata: Buffer;
  btf: Btf;
}

/** A knob's value: numbers for integers up to 2^53, bigint for 64-bit, boolean for bool. */
export type KnobValue = number | bigint | boolean;

/** The attach kind and target a section name implies. */
export function attachKindOf(section: string): { kind: AttachKind; target: string } {
  const slash = section.indexOf('/');
  const prefix = slash < 0 ? section : section.slice(0, slash);
  const rest = slash < 0 ? '' : section.slice(slash + 1);
  switch (prefix) {
    case 'sockops':
    case 'cgroup_skb':
    case 'cgroup':
    case 'sockopt':
      return { kind: 'cgroup', target: rest };
    case 'tp_btf':
      return { kind: 'tp_btf', target: rest };
    case 'fentry':
    case 'fexit':
      return { kind: prefix, target: rest };
    case 'tp':
    case 'tracepoint':
      return { kind: 'tracepoint', target: rest };
    case 'raw_tp':
    case 'raw_tracepoint':
      return { kind: 'raw_tp', target: rest };
    case 'iter':
      return { kind: 'iter', target: rest };
    default:
      return { kind: 'auto', target: rest };
  }
}

function symbolsIn(elf: ElfFile, section: string, type: number) {
  const s = elf.section(section);
  if (!s) return [];
  return elf.symbols.filter((y) => y.sectionIndex === s.index && y.type === type);
}

/** Reads a BPF object's description from its bytes. */
export function parseProbeSpec(bytes: Buffer, path = '<memory>'): ProbeSpec {
  const elf = parseElf(bytes);
  const btfSection = elf.section('.BTF');
  if (!btfSection)
    throw new NativeError('NAT_ERR_SPEC', `${path} has no .BTF section (compile with clang -g)`);
  const programs: ProgramSpec[] = [];
  for (const s of elf.sections) {
    if ((s.flags & SHF_EXECINSTR) === 0n || s.name === '.text') continue;
    for (const sym of symbolsIn(elf, s.name, STT_FUNC)) {
      programs.push({ name: sym.name, section: s.name, ...attachKindOf(s.name) });
    }
  }
  const rodata = elf.section('.rodata');
  const license = elf.section('license') ?? elf.section('.license');
  return {
    path,
    license: license ? license.data.toString('latin1').replace(/\0.*$/s, '') : '',
    programs,
    maps: symbolsIn(elf, '.maps', STT_OBJECT).map((y) => y.name),
    knobs: symbolsIn(elf, '.rodata', STT_OBJECT).map((y) => ({
      name: y.name,
      offset: y.value,
      size: y.size,
    })),
    rodata: rodata ? Buffer.from(rodata.data) : Buffer.alloc(0),
    btf: new Btf(btfSection.data),
  };
}

/** Reads a BPF object file's description. */
export function readProbeSpec(path: string): ProbeSpec {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw new NativeError(
      'NAT_ERR_OPEN',
      `${path}: ${(err as Error).message}`,
      Math.abs((err as { errno?: number }).errno ?? 0),
    );
  }
  return parseProbeSpec(bytes, path);
}

/** .rodata with knob values written in (little-endian), ready for setInitialValue before load. */
export function rodataWithKnobs(spec: ProbeSpec, values: Readonly<Record<string, KnobValue>>): Buffer {
  const out = Buffer.from(spec.rodata);
  for (const [name, value] of Object.entries(values)) {
    const knob = spec.knobs.find((k) => k.name === name);
    if (!knob) throw new NativeError('NAT_ERR_ARGUMENT', `${spec.path} has no knob ${name}`);
    const v = typeof value === 'boolean' ? (value ? 1n : 0n) : BigInt(value);
    const bits = BigInt(knob.size * 8);
    if (v < -(1n << (bits - 1n)) || v >= 1n << bits) {
      throw new NativeError('NAT_ERR_ARGUMENT', `knob ${name} (${knob.size} bytes) cannot hold ${value}`);
    }
    const u = BigInt.asUintN(Number(bits), v);
    for (let i = 0; i < knob.size; i++) out[knob.offset + i] = Number((u >> BigInt(8 * i)) & 0xffn);
  }
  return out;
}
