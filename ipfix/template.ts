/**
 * Templates (RFC 7011 3.4): field specifiers, parsing of template and options template sets,
 * and lazy compilation of per-template record codecs against a registry.
 */
import { IpfixError } from './errors.js';
import {
  compileRecordDecoder,
  compileRecordEncoder,
  type RecordDecoder,
  type RecordEncoder,
} from './record-codec.js';
import type { ElementRegistry, InformationElement } from './registry.js';
import { VARLEN } from './types.js';

/** Set ids with a fixed meaning (RFC 7011 3.3.2). */
export const SET_ID_TEMPLATE = 2;
/** Options template set id. */
export const SET_ID_OPTIONS_TEMPLATE = 3;
/** Lowest data set (and template) id. */
export const MIN_DATA_SET_ID = 256;

/** One field specifier as it travels on the wire. */
export interface FieldSpec {
  pen: number;
  id: number;
  /** Length in bytes, or VARLEN (65535). */
  length: number;
}

/** A field specifier resolved against a registry. */
export interface TemplateField extends FieldSpec {
  element: InformationElement;
}

/** A data or options template. Plain description; codecs are compiled on first use. */
export class Template {
  /** Fields resolved against the registry at `resolvedVersion`. */
  fields: TemplateField[] = [];
  /** Smallest possible record length (variable-length fields count their 1-byte prefix). */
  readonly minLength: number;
  /** Record length when every field is fixed, else -1. */
  readonly fixedLength: number;
  private resolvedVersion = -1;
  private decoder: RecordDecoder | undefined;
  private encoder: RecordEncoder | undefined;

  constructor(
    readonly id: number,
    readonly specs: readonly FieldSpec[],
    /** Number of scope fields; > 0 makes this an options template. */
    readonly scopeFieldCount = 0,
  ) {
    let min = 0;
    let varlen = false;
    for (const s of specs) {
      if (s.length === VARLEN) {
        varlen = true;
        min += 1;
      } else min += s.length;
    }
    this.minLength = min;
    this.fixedLength = varlen ? -1 : min;
  }

  /** True for options templates. */
  get isOptions(): boolean {
    return this.scopeFieldCount > 0;
  }

  /** True when both templates put the same fields in the same order. */
  sameAs(other: Template): boolean {
    if (other.scopeFieldCount !== this.scopeFieldCount || other.specs.length !== this.specs.length)
      return false;
    return this.specs.every((s, i) => {
      const o = other.specs[i]!;
      return o.pen === s.pen && o.id === s.id && o.length === s.length;
    });
  }

  /** Resolves field names and types against `registry` when it changed since the last call. */
  resolve(registry: ElementRegistry): void {
    const v = registry.fullVersion;
    if (v === this.resolvedVersion) return;
    this.resolvedVersion = v;
    const fields = this.specs.map((s) => ({ ...s, element: registry.resolve(s.pen, s.id) }));
    // A registry change that leaves this template's elements as they were keeps its codecs:
    // recompiling on every learned element would let an exporter burn CPU at will.
    const same =
      fields.length === this.fields.length &&
      fields.every((f, i) => {
        const o = this.fields[i]!.element;
        return o.name === f.element.name && o.type === f.element.type;
      });
    if (same) return;
    this.fields = fields;
    this.decoder = undefined;
    this.encoder = undefined;
  }

  /** The compiled record decoder for the current resolution. */
  recordDecoder(registry: ElementRegistry): RecordDecoder {
    this.resolve(registry);
    this.decoder ??= compileRecordDecoder(this, registry);
    return this.decoder;
  }

  /** The compiled record encoder for the current resolution. */
  recordEncoder(registry: ElementRegistry): RecordEncoder {
    this.resolve(registry);
    this.encoder ??= compileRecordEncoder(this);
    return this.encoder;
  }

  /** Bytes this template takes in a template set. */
  get wireLength(): number {
    let n = this.isOptions ? 6 : 4;
    for (const s of this.specs) n += s.pen ? 8 : 4;
    return n;
  }

  /** Writes the template record at `o`; returns the offset after it. */
  write(dv: DataView, o: number): number {
    dv.setUint16(o, this.id);
    dv.setUint16(o + 2, this.specs.length);
    o += 4;
    if (this.isOptions) {
      dv.setUint16(o, this.scopeFieldCount);
      o += 2;
    }
    for (const s of this.specs) {
      dv.setUint16(o, s.pen ? s.id | 0x8000 : s.id);
      dv.setUint16(o + 2, s.length);
      o += 4;
      if (s.pen) {
        dv.setUint32(o, s.pen);
        o += 4;
      }
    }
    return o;
  }
}

/** One record of a template set: a template, or a withdrawal (of one id, or all when id is 2/3). */
export type TemplateSetEntry =
  | { kind: 'template'; template: Template }
  | { kind: 'withdrawal'; templateId: number };

/**
 * Parses a template (setId 2) or options template (setId 3) set body in `dv[start, end)`.
 * Stops at the first malformed record and reports it; entries before it stay valid.
 */
export function parseTemplateSet(
  dv: DataView,
  start: number,
  end: number,
  setId: number,
): { entries: TemplateSetEntry[]; error?: IpfixError } {
  const entries: TemplateSetEntry[] = [];
  const options = setId === SET_ID_OPTIONS_TEMPLATE;
  let o = start;
  // Anything shorter than a record header is padding (RFC 7011 3.3.1).
  while (end - o >= 4) {
    const at = o;
    const templateId = dv.getUint16(o);
    const fieldCount = dv.getUint16(o + 2);
    o += 4;
    if (fieldCount === 0) {
      if (templateId !== setId && templateId < MIN_DATA_SET_ID) {
        return {
          entries,
          error: new IpfixError('IPFIX_ERR_TEMPLATE_ID', `withdrawal of template ${templateId}`, at),
        };
      }
      entries.push({ kind: 'withdrawal', templateId });
      continue;
    }
    if (templateId < MIN_DATA_SET_ID) {
      // A zero template id with room left is padding some exporters write in whole words.
      if (templateId === 0 && allZero(dv, at, end)) break;
      return { entries, error: new IpfixError('IPFIX_ERR_TEMPLATE_ID', `template ${templateId}`, at) };
    }
    let scopeFieldCount = 0;
    if (options) {
      if (end - o < 2)
        return {
          entries,
          error: new IpfixError('IPFIX_ERR_TEMPLATE', 'options template header cut short', at),
        };
      scopeFieldCount = dv.getUint16(o);
      o += 2;
      if (scopeFieldCount === 0 || scopeFieldCount > fieldCount) {
        return {
          entries,
          error: new IpfixError(
            'IPFIX_ERR_TEMPLATE',
            `template ${templateId}: scope field count ${scopeFieldCount} of ${fieldCount} fields`,
            at,
          ),
        };
      }
    }
    const specs: FieldSpec[] = [];
    for (let i = 0; i < fieldCount; i++) {
      if (end - o < 4) {
        return {
          entries,
          error: new IpfixError(
            'IPFIX_ERR_TEMPLATE',
            `template ${templateId}: ${fieldCount} fields do not fit the set`,
            at,
          ),
        };
      }
      let id = dv.getUint16(o);
      const length = dv.getUint16(o + 2);
      o += 4;
      let pen = 0;
      if (id & 0x8000) {
        if (end - o < 4) {
          return {
            entries,
            error: new IpfixError(
              'IPFIX_ERR_TEMPLATE',
              `template ${templateId}: enterprise number cut short`,
              at,
            ),
          };
        }
        id &= 0x7fff;
        pen = dv.getUint32(o);
        o += 4;
      }
      specs.push({ pen, id, length });
    }
    const template = new Template(templateId, specs, scopeFieldCount);
    if (template.minLength === 0) {
      return {
        entries,
        error: new IpfixError(
          'IPFIX_ERR_TEMPLATE',
          `template ${templateId}: records would have zero length`,
          at,
        ),
      };
    }
    entries.push({ kind: 'template', template });
  }
  return { entries };
}

function allZero(dv: DataView, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (dv.getUint8(i) !== 0) return false;
  return true;
}
