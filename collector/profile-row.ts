/**
 * Profile rows from decoded records, by a function compiled once per template (like the IPFIX
 * record codecs): it knows which field goes to which column and which into `extra`, so a record
 * costs straight-line code instead of a loop over its names with set lookups per field.
 */
import { type IpfixRecord, type Template, type TemplateField, valueToJson } from '../ipfix/index.js';
import { ADDRESS_FIELDS, PROFILE_COLUMN_SET } from './profile-schema.js';
import type { ProfileRow } from './store/types.js';

/** Dotted text for an IPv4-mapped IPv6 address, as the API reports IPv4 hosts. */
function unmap(a: string): string {
  return a.startsWith('::ffff:') && a.indexOf('.') > 0 ? a.slice(7) : a;
}

/** Builds one profile row from one record of the template it was compiled for. */
export type ProfileRowBuilder = (exporter: string, odid: number, now: number, r: IpfixRecord) => ProfileRow;

const cache = new WeakMap<readonly TemplateField[], ProfileRowBuilder>();

/** The row builder of a template (compiled on first use, again when its fields are re-resolved). */
export function profileRowBuilder(t: Template): ProfileRowBuilder {
  let b = cache.get(t.fields);
  if (!b) {
    b = compile(t);
    cache.set(t.fields, b);
  }
  return b;
}

function compile(t: Template): ProfileRowBuilder {
  const seen = new Set<string>();
  const types: number[] = [];
  const lines: string[] = [];
  for (const f of t.fields) {
    const name = f.element.name;
    // A name twice in a template holds its last value in the record: handle it once.
    if (seen.has(name)) continue;
    seen.add(name);
    const key = JSON.stringify(name);
    const addr = ADDRESS_FIELDS[name];
    types.push(f.element.type);
    const extra = `extra += ${JSON.stringify(`,${key}:`)} + toJson(v, T[${types.length - 1}]);`;
    lines.push(`v = r[${key}];`, 'if (v !== undefined) {');
    if (addr) {
      const v4 = name.includes('IPv4');
      lines.push(
        `  if (typeof v === 'string') {`,
        `    row.${addr} = unmap(v);`,
        `    if (row.ipVersion === undefined) row.ipVersion = ${v4 ? '4' : "v.startsWith('::ffff:') ? 4 : 6"};`,
        `  } else { ${extra} }`,
      );
    } else if (PROFILE_COLUMN_SET.has(name)) {
      lines.push(`  if (typeof v === 'number' || typeof v === 'bigint') row[${key}] = v; else { ${extra} }`);
    } else {
      lines.push(`  ${extra}`);
    }
    lines.push('}');
  }
  const src = `return function buildProfileRow(exporter, odid, now, r) {
  const row = { exporter, observationDomainId: odid, templateId: ${t.id}, receivedMilliseconds: now, extra: null };
  let v; let extra = '';
  ${lines.join('\n  ')}
  if (extra !== '') row.extra = '{' + extra.slice(1) + '}';
  return row;
};`;
  return new Function('T', 'toJson', 'unmap', src)(types, valueToJson, unmap) as ProfileRowBuilder;
}
