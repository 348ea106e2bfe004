/**
 * A reader of BTF, the kernel's type format: in a BPF object's .BTF section (the event layout the
 * probes were compiled with) and in /sys/kernel/btf/vmlinux (what this kernel has: tcp_sock
 * fields, tracepoints). Only what kpiflow asks of it: names, struct members, typedef targets,
 * function prototypes. Malformed input raises NAT_ERR_SPEC.
 */
import { NativeError } from './errors.js';

/** BTF_KIND_* numbers. */
export const BTF_KIND = {
  INT: 1,
  PTR: 2,
  ARRAY: 3,
  STRUCT: 4,
  UNION: 5,
  ENUM: 6,
  FWD: 7,
  TYPEDEF: 8,
  VOLATILE: 9,
  CONST: 10,
  RESTRICT: 11,
  FUNC: 12,
  FUNC_PROTO: 13,
  VAR: 14,
  DATASEC: 15,
  FLOAT: 16,
  DECL_TAG: 17,
  TYPE_TAG: 18,
  ENUM64: 19,
} as const;

/** A member of a struct or union. */
export interface BtfMember {
  name: string;
  type: number;
  /** Offset in bits from the start of the struct. */
  bitOffset: number;
  /** Bitfield width in bits, 0 when not a bitfield. */
  bitSize: number;
}

/** One field of a flattened struct layout: a dotted path, byte offset and byte size. */
export interface LayoutField {
  path: string;
  offset: number;
  size: number;
}

const MODIFIERS: ReadonlySet<number> = new Set([
  BTF_KIND.TYPEDEF,
  BTF_KIND.VOLATILE,
  BTF_KIND.CONST,
  BTF_KIND.RESTRICT,
  BTF_KIND.TYPE_TAG,
]);

function fail(detail: string): never {
  throw new NativeError('NAT_ERR_SPEC', `BTF: ${detail}`);
}

/** Parsed BTF. Type ids start at 1; id 0 is void. */
export class Btf {
  private readonly types: Buffer;
  private readonly strings: Buffer;
  /** Byte offset of each type's record in `types`, by id (index 0 unused). */
  private readonly offsets: number[] = [0];
  private byName: Map<string, number[]> | null = null;

  constructor(buf: Buffer) {
    if (buf.length < 24 || buf.readUInt16LE(0) !== 0xeb9f)
      fail('bad magic (big-endian BTF is not supported)');
    const hdrLen = buf.readUInt32LE(4);
    const typeOff = buf.readUInt32LE(8);
    const typeLen = buf.readUInt32LE(12);
    const strOff = buf.readUInt32LE(16);
    const strLen = buf.readUInt32LE(20);
    if (hdrLen + typeOff + typeLen > buf.length || hdrLen + strOff + strLen > buf.length) fail('truncated');
    this.types = buf.subarray(hdrLen + typeOff, hdrLen + typeOff + typeLen);
    this.strings = buf.subarray(hdrLen + strOff, hdrLen + strOff + strLen);
    let o = 0;
    while (o < this.types.length) {
      if (o + 12 > this.types.length) fail('type record past the end');
      this.offsets.push(o);
      o += 12 + this.extraSize(o);
    }
  }

  /** Number of types, void excluded. */
  get count(): number {
    return this.offsets.length - 1;
  }

  private extraSize(o: number): number {
    const info = this.types.readUInt32LE(o + 4);
    const kind = (info >>> 24) & 0x1f;
    const vlen = info & 0xffff;
    switch (kind) {
      case BTF_KIND.INT:
      case BTF_KIND.VAR:
      case BTF_KIND.DECL_TAG:
        return 4;
      case BTF_KIND.ARRAY:
        return 12;
      case BTF_KIND.STRUCT:
      case BTF_KIND.UNION:
      case BTF_KIND.DATASEC:
      case BTF_KIND.ENUM64:
        return vlen * 12;
      case BTF_KIND.ENUM:
      case BTF_KIND.FUNC_PROTO:
        return vlen * 8;
      case BTF_KIND.PTR:
      case BTF_KIND.FWD:
      case BTF_KIND.TYPEDEF:
      case BTF_KIND.VOLATILE:
      case BTF_KIND.CONST:
      case BTF_KIND.RESTRICT:
      case BTF_KIND.FUNC:
      case BTF_KIND.FLOAT:
      case BTF_KIND.TYPE_TAG:
        return 0;
      default:
        return fail(`unknown kind ${kind}`);
    }
  }

  private str(off: number): string {
    if (off >= this.strings.length) return '';
    const end = this.strings.indexOf(0, off);
    return this.strings.toString('latin1', off, end < 0 ? this.strings.length : end);
  }

  private rec(id: number): number {
    const o = this.offsets[id];
    if (o === undefined || id === 0) fail(`no type ${id}`);
    return o;
  }

  /** The kind (BTF_KIND) of a type. */
  kind(id: number): number {
    return (this.types.readUInt32LE(this.rec(id) + 4) >>> 24) & 0x1f;
  }

  /** The name of a type ('' when anonymous). */
  name(id: number): string {
    return this.str(this.types.readUInt32LE(this.rec(id)));
  }

  private vlen(id: number): number {
    return this.types.readUInt32LE(this.rec(id) + 4) & 0xffff;
  }

  /** The type a modifier, pointer, typedef, var or func refers to. */
  target(id: number): number {
    return this.types.readUInt32LE(this.rec(id) + 8);
  }

  /** Ids of every type with this name and (when given) kind. */
  find(name: string, kind?: number): number[] {
    if (!this.byName) {
      const m = new Map<string, number[]>();
      for (let id = 1; id < this.offsets.length; id++) {
        const n = this.name(id);
        if (!n) continue;
        const list = m.get(n);
        if (list) list.push(id);
        else m.set(n, [id]);
      }
      this.byName = m;
    }
    const ids = this.byName.get(name) ?? [];
    return kind === undefined ? ids : ids.filter((id) => this.kind(id) === kind);
  }

  /** Skips typedefs and qualifiers. */
  resolve(id: number): number {
    let t = id;
    for (let i = 0; i < 32 && t !== 0 && MODIFIERS.has(this.kind(t)); i++) t = this.target(t);
    return t;
  }

  /** Size in bytes of a type. */
  sizeOf(id: number): number {
    const t = this.resolve(id);
    if (t === 0) return 0;
    switch (this.kind(t)) {
      case BTF_KIND.INT:
      case BTF_KIND.STRUCT:
      case BTF_KIND.UNION:
      case BTF_KIND.ENUM:
      case BTF_KIND.ENUM64:
      case BTF_KIND.FLOAT:
      case BTF_KIND.DATASEC:
        return this.types.readUInt32LE(this.rec(t) + 8);
      case BTF_KIND.PTR:
        return 8;
      case BTF_KIND.ARRAY: {
        const o = this.rec(t) + 12;
        return this.sizeOf(this.types.readUInt32LE(o)) * this.types.readUInt32LE(o + 8);
      }
      default:
        return fail(`type ${t} has no size`);
    }
  }

  /** Members of a struct or union. */
  members(id: number): BtfMember[] {
    const t = this.resolve(id);
    const kind = this.kind(t);
    if (kind !== BTF_KIND.STRUCT && kind !== BTF_KIND.UNION) fail(`type ${t} is not a struct or union`);
    const kindFlag = this.types.readUInt32LE(this.rec(t) + 4) >>> 31 === 1;
    const out: BtfMember[] = [];
    const base = this.rec(t) + 12;
    for (let i = 0; i < this.vlen(t); i++) {
      const o = base + i * 12;
      const off = this.types.readUInt32LE(o + 8);
      out.push({
        name: this.str(this.types.readUInt32LE(o)),
        type: this.types.readUInt32LE(o + 4),
        bitOffset: kindFlag ? off & 0xffffff : off,
        bitSize: kindFlag ? off >>> 24 : 0,
      });
    }
    return out;
  }

  /** The struct of this name, or null. */
  struct(name: string): number | null {
    return this.find(name, BTF_KIND.STRUCT)[0] ?? null;
  }

  /** True when struct `structName` has a member `member` (anonymous unions and structs searched too). */
  hasMember(structName: string, member: string): boolean {
    const id = this.struct(structName);
    if (id === null) return false;
    const walk = (t: number): boolean =>
      this.members(t).some((m) => {
        if (m.name === member) return true;
        const k = this.kind(this.resolve(m.type));
        return m.name === '' && (k === BTF_KIND.STRUCT || k === BTF_KIND.UNION) && walk(m.type);
      });
    return walk(id);
  }

  /** Parameter names of the prototype a typedef of a function pointer names (e.g. btf_trace_*). */
  typedefParams(name: string): string[] | null {
    const id = this.find(name, BTF_KIND.TYPEDEF)[0];
    if (id === undefined) return null;
    let t = this.resolve(id);
    if (t !== 0 && this.kind(t) === BTF_KIND.PTR) t = this.resolve(this.target(t));
    if (t === 0 || this.kind(t) !== BTF_KIND.FUNC_PROTO) return null;
    const out: string[] = [];
    const base = this.rec(t) + 12;
    for (let i = 0; i < this.vlen(t); i++) out.push(this.str(this.types.readUInt32LE(base + i * 8)));
    return out;
  }

  /** Values of an enum by name. */
  enumValues(name: string): Map<string, number> | null {
    const id = this.find(name, BTF_KIND.ENUM)[0];
    if (id === undefined) return null;
    const out = new Map<string, number>();
    const base = this.rec(id) + 12;
    for (let i = 0; i < this.vlen(id); i++) {
      out.set(this.str(this.types.readUInt32LE(base + i * 8)), this.types.readInt32LE(base + i * 8 + 4));
    }
    return out;
  }

  /**
   * A struct flattened to its leaf fields (nested structs expanded with dotted paths, arrays kept
   * whole): what a decoder mirrors. Bitfields are not expected in kpiflow's layouts and refused.
   */
  layout(structName: string): { size: number; fields: LayoutField[] } {
    const id = this.struct(structName);
    if (id === null) fail(`no struct ${structName}`);
    const fields: LayoutField[] = [];
    const walk = (t: number, prefix: string, base: number): void => {
      for (const m of this.members(t)) {
        if (m.bitSize !== 0 || m.bitOffset % 8 !== 0) fail(`${structName}.${prefix}${m.name} is a bitfield`);
        const r = this.resolve(m.type);
        const offset = base + m.bitOffset / 8;
        const k = this.kind(r);
        if (k === BTF_KIND.STRUCT || k === BTF_KIND.UNION) walk(r, `${prefix}${m.name}.`, offset);
        else fields.push({ path: `${prefix}${m.name}`, offset, size: this.sizeOf(r) });
      }
    };
    walk(id, '', 0);
    return { size: this.sizeOf(id), fields };
  }
}
