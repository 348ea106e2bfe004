/**
 * JSON text for decoded records (NDJSON output of `kpiflow ipfix dump`, API responses). Keys are
 * element names; 64-bit integers stay exact (bare digits), bytes become hex, times ISO 8601.
 */
import type { IpfixRecord } from './record-codec.js';
import type { ElementRegistry } from './registry.js';
import type { Template } from './template.js';
import {
  type BasicList,
  DataType,
  type IpfixValue,
  type SubTemplateList,
  type SubTemplateMultiList,
  toHex,
} from './types.js';

const typeMaps = new WeakMap<object, Map<string, number>>();

function typesOf(t: Template): Map<string, number> {
  let m = typeMaps.get(t.fields);
  if (!m) {
    m = new Map();
    for (const f of t.fields) if (!m.has(f.element.name)) m.set(f.element.name, f.element.type);
    typeMaps.set(t.fields, m);
  }
  return m;
}

function iso(ms: number, fraction: string): string | null {
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return null;
  const s = d.toISOString();
  return `${s.slice(0, 19)}${fraction}Z`;
}

/** JSON text of one value of an element of `type`. */
export function valueToJson(v: IpfixValue, type: number, registry?: ElementRegistry): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return `[${v.map((x) => valueToJson(x, type, registry)).join(',')}]`;
  switch (typeof v) {
    case 'bigint':
      if (type === DataType.dateTimeNanoseconds) {
        const ms = Number(v / 1000000n);
        const frac = ((v % 1000000000n) + 1000000000n) % 1000000000n;
        const t = iso(ms, `.${frac.toString().padStart(9, '0')}`);
        if (t) return JSON.stringify(t);
      }
      return v.toString();
    case 'number': {
      if (type === DataType.dateTimeSeconds) {
        const t = iso(v * 1000, '');
        if (t) return JSON.stringify(t);
      } else if (type === DataType.dateTimeMilliseconds) {
        const t = iso(v, `.${String(v % 1000).padStart(3, '0')}`);
        if (t) return JSON.stringify(t);
      } else if (type === DataType.dateTimeMicroseconds) {
        const t = iso(
          Math.floor(v / 1000),
          `.${String(((v % 1000000) + 1000000) % 1000000).padStart(6, '0')}`,
        );
        if (t) return JSON.stringify(t);
      }
      return Number.isFinite(v) ? String(v) : JSON.stringify(String(v));
    }
    case 'string':
      return JSON.stringify(v);
    case 'boolean':
      return v ? 'true' : 'false';
    default:
      break;
  }
  if (v instanceof Uint8Array) return JSON.stringify(toHex(v));
  if ('values' in v) {
    const l = v as BasicList;
    const et = registry ? registry.resolve(l.pen, l.id).type : DataType.octetArray;
    const name = registry ? registry.resolve(l.pen, l.id).name : `ie${l.pen}_${l.id}`;
    return `{"semantic":${l.semantic},"element":${JSON.stringify(name)},"values":[${l.values.map((x) => valueToJson(x, et, registry)).join(',')}]}`;
  }
  if ('blocks' in v) {
    const l = v as SubTemplateMultiList;
    return `{"semantic":${l.semantic},"blocks":[${l.blocks.map((b) => `{"templateId":${b.templateId},"bytes":${JSON.stringify(toHex(b.bytes))}}`).join(',')}]}`;
  }
  const l = v as SubTemplateList;
  return `{"semantic":${l.semantic},"templateId":${l.templateId},"bytes":${JSON.stringify(toHex(l.bytes))}}`;
}

/** JSON object text of a record, optionally preceded by extra already-encoded members. */
export function recordToJson(t: Template, r: IpfixRecord, registry?: ElementRegistry, prefix = ''): string {
  const types = typesOf(t);
  let s = prefix ? `{${prefix}` : '{';
  let first = !prefix;
  for (const k in r) {
    s += `${first ? '' : ','}${JSON.stringify(k)}:${valueToJson(r[k]!, types.get(k) ?? DataType.octetArray, registry)}`;
    first = false;
  }
  return `${s}}`;
}

/** JSON-friendly description of a template. */
export function templateToJson(t: Template): object {
  return {
    templateId: t.id,
    scopeFieldCount: t.scopeFieldCount,
    fields: t.fields.map((f) => ({
      name: f.element.name,
      pen: f.pen,
      id: f.id,
      length: f.length,
    })),
  };
}
