/**
 * The columnar ingest path (collector/profile-columns.ts) against the generic one: the same IPFIX
 * messages through an Ingest that reads profile sets straight into columns and through one that
 * decodes every record into an object first must leave the same rows in the store, for every kind
 * of field the columnar path claims; templates it does not claim must take the generic path.
 * The generic path itself is checked against the values sent in ingest.test.ts and against real
 * exporters in e2e-exporters.test.ts; here a few values are checked against what was sent too.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { mptcpMetaFields, tcpProfileFields } from '../../agent/profile-templates.js';
import { Ingest } from '../../collector/ingest.js';
import { SqliteStore } from '../../collector/store/sqlite-store.js';
import type { ProfileRow } from '../../collector/store/types.js';
import { type FieldDefinition, IpfixEncoder, type IpfixValue } from '../../ipfix/index.js';

const log = pino({ level: 'silent' });

interface Case {
  name: string;
  templateId: number;
  fields: FieldDefinition[];
  record: (i: number) => Record<string, IpfixValue>;
  columnar: boolean;
}

const v6 = (i: number) =>
  i % 3 === 0
    ? `::ffff:192.0.2.${i % 200}`
    : i % 3 === 1
      ? `2001:db8::${(i % 500).toString(16)}`
      : '2001:db8:0:1::1';

/** Values for any numeric field of the agent's templates, within each field's length. */
function agentRecord(fields: string[], i: number): Record<string, IpfixValue> {
  const r: Record<string, IpfixValue> = {};
  const lengths = new IpfixEncoder().defineTemplate(47561, fields).fields.map((f) => f.length);
  for (const [k, f] of fields.entries()) {
    const cap = Math.min(100_000, 2 ** (8 * lengths[k]!));
    if (f === 'flowId')
      r[f] = i % 4 === 0 ? 2n ** 64n - 1n - BigInt(i) : i % 4 === 1 ? 2n ** 53n + BigInt(i) : i * 977;
    else if (f === 'sourceIPv6Address') r[f] = v6(i);
    else if (f === 'destinationIPv6Address') r[f] = v6(i + 1);
    else if (f === 'ipVersion') r[f] = i % 3 === 0 ? 4 : 6;
    else if (f.endsWith('Milliseconds') && f.startsWith('flow')) r[f] = 1_790_000_000_000 + i * 37;
    else if (f === 'flowStartReason' || f === 'flowEndReason') r[f] = 1 + (i % 7);
    else r[f] = (i * 7919) % cap;
  }
  return r;
}

const tcp = tcpProfileFields([], { reorderingDistance: true });
const meta = mptcpMetaFields();
const CASES: Case[] = [
  {
    name: "the agent's TCP template (IPv6 fields, IPv4-mapped and not, 64-bit flowIds)",
    templateId: 47561,
    fields: tcp,
    record: (i) => agentRecord(tcp, i),
    columnar: true,
  },
  {
    name: "the agent's MPTCP meta template",
    templateId: 47563,
    fields: meta,
    record: (i) => agentRecord(meta, i),
    columnar: true,
  },
  {
    name: 'IPv4 fields without ipVersion, numeric extras (64-bit, signed, float), reduced-size encoding',
    templateId: 47561,
    fields: [
      { name: 'flowId', length: 4 },
      'sourceIPv4Address',
      'destinationIPv4Address',
      { name: 'destinationTransportPort', length: 1 },
      'flowStartMilliseconds',
      { name: 'transferredOctetTotalCount', length: 3 },
      { name: 'receivedOctetTotalCount', length: 6 },
      'meanLatencyMicroseconds',
      'packetDeltaCount',
      'octetDeltaCount',
      'mplsTopLabelTTL',
      'samplingProbability',
      'flowDurationMilliseconds',
    ],
    record: (i) => ({
      flowId: i,
      sourceIPv4Address: '192.0.2.1',
      destinationIPv4Address: `198.51.100.${i % 250}`,
      destinationTransportPort: 200 + (i % 50),
      flowStartMilliseconds: 1_790_000_000_000 + i,
      transferredOctetTotalCount: i * 1000,
      receivedOctetTotalCount: i * 2 ** 30,
      meanLatencyMicroseconds: 10_000 + i,
      packetDeltaCount: i % 2 ? 2n ** 63n + BigInt(i) : i,
      octetDeltaCount: 1000 + i,
      mplsTopLabelTTL: i % 256,
      samplingProbability: i / 7,
      flowDurationMilliseconds: i * 3,
    }),
    columnar: true,
  },
  {
    name: 'an ipVersion field after the addresses wins over the address family',
    templateId: 47564,
    fields: ['sourceIPv4Address', 'destinationIPv6Address', 'ipVersion', 'pathIndex'],
    record: (i) => ({
      sourceIPv4Address: '203.0.113.9',
      destinationIPv6Address: v6(i),
      ipVersion: 6,
      pathIndex: i % 4,
    }),
    columnar: true,
  },
  {
    name: 'the IP version from the first address field when there is no ipVersion (mapped or not)',
    templateId: 47564,
    fields: ['destinationIPv6Address', 'sourceIPv4Address', 'pathIndex'],
    record: (i) => ({
      destinationIPv6Address: v6(i),
      sourceIPv4Address: '203.0.113.9',
      pathIndex: i % 4,
    }),
    columnar: true,
  },
  {
    name: 'a string field (generic path)',
    templateId: 47561,
    fields: ['flowId', 'sourceIPv4Address', 'interfaceName', 'stallCount'],
    record: (i) => ({
      flowId: i,
      sourceIPv4Address: '192.0.2.7',
      interfaceName: `veth${i}`,
      stallCount: i % 3,
    }),
    columnar: false,
  },
  {
    name: 'a name twice (generic path)',
    templateId: 47561,
    fields: ['flowId', 'stallCount', 'stallCount'],
    record: (i) => ({ flowId: i, stallCount: [i, i + 1] }),
    columnar: false,
  },
];

async function ingestAll(
  c: Case,
  n: number,
  columnar: boolean,
): Promise<{ rows: ProfileRow[]; ingest: Ingest }> {
  const store = new SqliteStore({ path: ':memory:', layout: 'blocks' });
  const ingest = new Ingest({ store, log, batchSize: 300, columnar, clock: () => 1_790_000_500_000 });
  const enc = new IpfixEncoder({ observationDomainId: 9 });
  enc.defineTemplate(c.templateId, c.fields);
  for (let i = 0; i < n; i++) enc.add(c.templateId, c.record(i));
  for (const m of enc.flush())
    ingest.message('udp:192.0.2.50:4739', 'udp', m, { address: '192.0.2.50', port: 4739 });
  await ingest.close();
  const rows = (await store.profiles({}, { limit: 10_000, order: 'asc' })).items;
  await store.close();
  return { rows, ingest };
}

describe('columnar profile ingest', () => {
  for (const c of CASES) {
    it(`stores what the generic path stores: ${c.name}`, async () => {
      const n = 1000;
      const col = await ingestAll(c, n, true);
      const gen = await ingestAll(c, n, false);
      assert.equal(gen.ingest.counters.recordsColumnar, 0);
      assert.equal(col.ingest.counters.recordsColumnar, c.columnar ? n : 0, 'records read into columns');
      assert.equal(col.rows.length, n);
      assert.deepEqual(col.rows, gen.rows);
    });
  }

  it('keeps the values sent: 64-bit flowIds, unmapped IPv4, extras in template order', async () => {
    const { rows } = await ingestAll(CASES[0]!, 12, true);
    const sent = Array.from({ length: 12 }, (_, i) => CASES[0]!.record(i));
    const byFlow = new Map(rows.map((r) => [String(r.flowId), r]));
    for (const s of sent) {
      const r = byFlow.get(String(s.flowId));
      assert.ok(r, `flowId ${s.flowId} stored`);
      assert.equal(r.sourceAddress, (s.sourceIPv6Address as string).replace('::ffff:', ''));
      assert.equal(r.ipVersion, s.ipVersion);
      assert.equal(r.transferredOctetTotalCount, s.transferredOctetTotalCount);
    }
    const x = await ingestAll(CASES[2]!, 3, true);
    assert.equal(
      x.rows[1]!.extra,
      `{"packetDeltaCount":${2n ** 63n + 1n},"octetDeltaCount":1001,"mplsTopLabelTTL":1,"samplingProbability":${1 / 7},"flowDurationMilliseconds":3}`,
    );
    assert.equal(x.rows[1]!.ipVersion, 4);
    assert.equal(x.rows[1]!.receivedOctetTotalCount, 2 ** 30);
  });
});
