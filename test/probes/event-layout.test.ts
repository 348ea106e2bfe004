/**
 * C and TypeScript cannot drift apart: the decoder's layout of struct kf_event, its event kinds,
 * counter bits and statistics indexes are compared with the compiled object's BTF as bpftool (an
 * independent reader) dumps it, and with native/'s own BTF reader.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { EVENT_KIND } from '../../agent/probe-event.js';
import {
  PROBE_COUNTERS,
  PROBE_EVENT_LAYOUT,
  PROBE_EVENT_SIZE,
  PROBE_EVENT_STRUCT,
  PROBE_FLAG_MPTCP_SUBFLOW,
} from '../../agent/probe-event-decoder.js';
import { PROBE_STAT } from '../../agent/probe-loader.js';
import { readProbeSpec } from '../../native/index.js';
import { IN_CI, requireTools, run } from '../helpers/tools.js';

const OBJECT = fileURLToPath(new URL('../../../build/probes/kpiflow.bpf.o', import.meta.url));

interface BtfJsonType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: { name: string; type_id: number; bits_offset: number; bitfield_size?: number }[];
  values?: { name: string; val: number }[];
}

/** Flattens a struct from bpftool's JSON the way PROBE_EVENT_LAYOUT writes it. */
function flatten(types: Map<number, BtfJsonType>, structName: string) {
  const byId = (id: number) => types.get(id)!;
  const resolve = (id: number): BtfJsonType => {
    let t = byId(id);
    while (['TYPEDEF', 'CONST', 'VOLATILE', 'RESTRICT', 'TYPE_TAG'].includes(t.kind)) t = byId(t.type_id!);
    return t;
  };
  const sizeOf = (t: BtfJsonType): number =>
    t.kind === 'ARRAY' ? sizeOf(resolve(t.type_id!)) * t.nr_elems! : t.kind === 'PTR' ? 8 : t.size!;
  const out: Record<string, { offset: number; size: number }> = {};
  const walk = (t: BtfJsonType, prefix: string, base: number) => {
    for (const m of t.members!) {
      assert.ok(!m.bitfield_size, `${prefix}${m.name} must not be a bitfield`);
      assert.equal(m.bits_offset % 8, 0);
      const mt = resolve(m.type_id);
      const offset = base + m.bits_offset / 8;
      if (mt.kind === 'STRUCT') walk(mt, `${prefix}${m.name}.`, offset);
      else out[`${prefix}${m.name}`] = { offset, size: sizeOf(mt) };
    }
  };
  const root = [...types.values()].find((t) => t.kind === 'STRUCT' && t.name === structName);
  assert.ok(root, `struct ${structName} not in the object's BTF`);
  walk(root, '', 0);
  return { size: root.size!, fields: out };
}

function objectPresent(): boolean {
  if (existsSync(OBJECT)) return true;
  if (IN_CI) throw new Error(`${OBJECT} missing: make build compiles the probes`);
  return false;
}

describe('kf_event layout', () => {
  it('matches the object BTF as bpftool reads it: every field, offset and size, and the total size', (t) => {
    if (!requireTools(t, 'bpftool')) return;
    if (!objectPresent()) return t.skip('SKIPPED: probes not built (make build)');
    const dump = JSON.parse(run('bpftool', ['btf', 'dump', 'file', OBJECT, '-j'])) as {
      types: BtfJsonType[];
    };
    const types = new Map(dump.types.map((x) => [x.id, x]));
    const btf = flatten(types, PROBE_EVENT_STRUCT);
    assert.equal(btf.size, PROBE_EVENT_SIZE);
    assert.deepEqual(btf.fields, { ...PROBE_EVENT_LAYOUT });

    // Enum values: event kinds, missing-counter bits, flags and statistics slots.
    const enumOf = (name: string) => {
      const e = dump.types.find((x) => x.kind === 'ENUM' && x.name === name);
      assert.ok(e, `enum ${name} not in the object's BTF`);
      return new Map(e.values!.map((v) => [v.name, v.val]));
    };
    const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase();
    const kinds = enumOf('kf_event_kind');
    assert.equal(kinds.size, Object.keys(EVENT_KIND).length);
    for (const [name, value] of Object.entries(EVENT_KIND))
      assert.equal(kinds.get(`KF_EV_${snake(name)}`), value, name);
    const bits = enumOf('kf_missing_bit');
    assert.equal(bits.size, PROBE_COUNTERS.length);
    PROBE_COUNTERS.forEach((c, i) => {
      const cName = c.field.slice('counters.'.length).toUpperCase();
      assert.equal(bits.get(`KF_MISSING_${cName}`), 2 ** i, c.name);
    });
    assert.equal(enumOf('kf_event_flag').get('KF_FLAG_MPTCP_SUBFLOW'), PROBE_FLAG_MPTCP_SUBFLOW);
    const stats = enumOf('kf_stat');
    for (const [name, value] of Object.entries(PROBE_STAT))
      assert.equal(stats.get(`KF_STAT_${snake(name)}`), value);
  });

  it('matches the object BTF as native/ reads it (so ProbeSpec layouts are trustworthy)', (t) => {
    if (!objectPresent()) return t.skip('SKIPPED: probes not built (make build)');
    const spec = readProbeSpec(OBJECT);
    const layout = spec.btf.layout(PROBE_EVENT_STRUCT);
    assert.equal(layout.size, PROBE_EVENT_SIZE);
    assert.deepEqual(
      Object.fromEntries(layout.fields.map((f) => [f.path, { offset: f.offset, size: f.size }])),
      {
        ...PROBE_EVENT_LAYOUT,
      },
    );
    // The per-socket storage value: at most 200 bytes per connection (64 today).
    assert.ok(spec.btf.sizeOf(spec.btf.struct('kf_sk_state')!) <= 200);
  });

  it('lays fields out contiguously, naturally aligned, with no hidden padding', () => {
    const fields = Object.entries(PROBE_EVENT_LAYOUT).sort((a, b) => a[1].offset - b[1].offset);
    let at = 0;
    for (const [name, f] of fields) {
      assert.equal(f.offset, at, name);
      if ([1, 2, 4, 8].includes(f.size)) assert.equal(f.offset % f.size, 0, `${name} misaligned`);
      at += f.size;
    }
    assert.equal(at, PROBE_EVENT_SIZE);
    assert.equal(PROBE_EVENT_SIZE % 8, 0);
  });
});
