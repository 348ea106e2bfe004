/**
 * The store conformance suite: every Store backend must pass it unchanged. Expected values are
 * computed here from the rows the test generates, never read back from the store under test.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { FlowRow, ProfileRow, Store } from '../../collector/index.js';
import { tablePackers } from '../../collector/store/packed-batch.js';

const T0 = Date.UTC(2026, 0, 1);

/** Deterministic profiles: 3 destinations, 2 IP versions, 4 end states, 40 connections. */
export function sampleProfiles(n: number, exporter = 'udp:192.0.2.9:4739'): ProfileRow[] {
  const dests = ['198.51.100.1', '198.51.100.2', '2001:db8::7'];
  const rows: ProfileRow[] = [];
  for (let i = 0; i < n; i++) {
    const d = dests[i % 3]!;
    rows.push({
      exporter,
      observationDomainId: 1,
      templateId: 47561,
      receivedMilliseconds: T0 + i * 1000 + 5,
      extra: i % 10 === 0 ? JSON.stringify({ interfaceName: `eth${i}` }) : null,
      flowId: 1000 + (i % 40),
      flowStartMilliseconds: T0 + i * 1000,
      flowEndMilliseconds: T0 + i * 1000 + 500,
      flowStartReason: i % 40 === i ? 1 : 2,
      flowEndReason: [2, 3, 4, 5][i % 4]!,
      ipVersion: d.includes(':') ? 6 : 4,
      sourceAddress: d.includes(':') ? '2001:db8::1' : '192.0.2.1',
      destinationAddress: d,
      sourceTransportPort: 40000 + i,
      destinationTransportPort: i % 2 ? 443 : 80,
      transferredOctetTotalCount: i * 100,
      receivedOctetTotalCount: i * 10,
      retransmittedPacketTotalCount: i % 5,
      meanLatencyMilliseconds: 10 + ((i * 7) % 50),
      stallCount: i % 7 === 0 ? 1 : 0,
      timeToEstablishMilliseconds: i < 40 ? 20 + i : null,
    });
  }
  return rows;
}

function sampleFlows(n: number): FlowRow[] {
  return Array.from({ length: n }, (_, i) => ({
    exporter: 'udp:203.0.113.5:9995',
    observationDomainId: 0,
    templateId: 1024,
    receivedMilliseconds: T0 + i,
    flowStartMilliseconds: i % 10 === 9 ? null : T0 + i * 10,
    flowEndMilliseconds: i % 10 === 9 ? null : T0 + i * 10 + 3,
    protocolIdentifier: i % 2 ? 6 : 17,
    ipVersion: 4,
    sourceAddress: '192.0.2.50',
    destinationAddress: `198.51.100.${i % 4}`,
    sourceTransportPort: 1000 + i,
    destinationTransportPort: 53,
    octetDeltaCount: i === 0 ? 2n ** 60n : i * 64,
    packetDeltaCount: i,
    fields: JSON.stringify({ octetDeltaCount: i * 64, note: 'x' }),
  }));
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.max(1, Math.ceil((p / 100) * sorted.length)) - 1]!;
}

/** Registers the conformance tests for a store made by `make` (a fresh, empty store each call). */
export function storeConformance(name: string, make: () => Promise<Store>): void {
  describe(`store conformance: ${name}`, () => {
    it('stores profiles with every column and the extra JSON intact', async () => {
      const s = await make();
      try {
        const rows = sampleProfiles(30);
        await s.insert({ profiles: rows, flows: [], exporters: [] });
        const page = await s.profiles({}, { limit: 1000, order: 'asc' });
        assert.equal(page.items.length, 30);
        assert.equal(page.nextCursor, null);
        for (const [i, r] of rows.entries()) {
          const got = page.items[i]!;
          for (const [k, v] of Object.entries(r)) {
            if (v === null && got[k] === undefined) continue;
            assert.deepEqual(got[k], v, `row ${i} column ${k}`);
          }
        }
      } finally {
        await s.close();
      }
    });

    it('stores a batch packed by columns (what ingest writes) as the same rows', async () => {
      const s = await make();
      try {
        const rows = sampleProfiles(40);
        rows[3]!.flowId = 2n ** 64n - 5n;
        rows[4]!.transferredOctetTotalCount = 2n ** 62n + 3n;
        const flows = sampleFlows(7);
        const packers = tablePackers();
        await s.insertPacked({
          profiles: packers.profiles.packRows(rows),
          flows: packers.flows.packRows(flows),
          exporters: [],
        });
        const page = await s.profiles({}, { limit: 1000, order: 'asc' });
        assert.equal(page.items.length, 40);
        for (const [i, r] of rows.entries()) {
          const got = page.items[i]!;
          for (const [k, v] of Object.entries(r)) {
            if (v === null && got[k] === undefined) continue;
            assert.deepEqual(got[k], v, `row ${i} column ${k}`);
          }
        }
        const f = await s.flows({}, { limit: 100, order: 'asc' });
        assert.deepEqual(
          f.items.map((x) => x.fields),
          flows.map((x) => x.fields),
        );
      } finally {
        await s.close();
      }
    });

    it('keeps 64-bit values exact and orders a profile without a start time by its arrival', async () => {
      const s = await make();
      try {
        const rows = sampleProfiles(3);
        rows[0]!.flowId = 2n ** 64n - 1n;
        rows[0]!.transferredOctetTotalCount = 2n ** 60n + 1n;
        rows[1]!.receivedOctetTotalCount = 2n ** 53n + 2n;
        rows[2]!.flowStartMilliseconds = null;
        rows[2]!.receivedMilliseconds = T0 - 1;
        await s.insert({ profiles: rows, flows: [], exporters: [] });
        const page = await s.profiles({}, { limit: 10, order: 'asc' });
        assert.deepEqual(
          page.items.map((r) => r.receivedMilliseconds),
          [T0 - 1, rows[0]!.receivedMilliseconds, rows[1]!.receivedMilliseconds],
        );
        assert.equal(page.items[0]!.flowStartMilliseconds ?? null, null);
        assert.equal(page.items[1]!.flowId, 2n ** 64n - 1n);
        assert.equal(page.items[1]!.transferredOctetTotalCount, 2n ** 60n + 1n);
        assert.equal(page.items[2]!.receivedOctetTotalCount, 2n ** 53n + 2n);
        const conn = await s.connection(2n ** 64n - 1n);
        assert.equal(conn.length, 1);
      } finally {
        await s.close();
      }
    });

    it('filters by time, address, port, exporter, IP version, states and SYN retransmission', async () => {
      const s = await make();
      try {
        const rows = sampleProfiles(120);
        rows.push(...sampleProfiles(6, 'tcp:192.0.2.77:50000'));
        await s.insert({ profiles: rows, flows: [], exporters: [] });
        const count = async (f: Parameters<Store['profiles']>[0]) =>
          (await s.profiles(f, { limit: 1000, order: 'asc' })).items.length;
        const expect = (pred: (r: ProfileRow) => boolean) => rows.filter(pred).length;
        const from = T0 + 10_000;
        const to = T0 + 50_000;
        assert.equal(
          await count({ from, to }),
          expect(
            (r) => (r.flowStartMilliseconds as number) >= from && (r.flowStartMilliseconds as number) < to,
          ),
        );
        assert.equal(
          await count({ address: '198.51.100.2' }),
          expect((r) => r.destinationAddress === '198.51.100.2' || r.sourceAddress === '198.51.100.2'),
        );
        assert.equal(
          await count({ destinationAddress: '2001:db8::7' }),
          expect((r) => r.destinationAddress === '2001:db8::7'),
        );
        assert.equal(
          await count({ port: 443 }),
          expect((r) => r.destinationTransportPort === 443 || r.sourceTransportPort === 443),
        );
        assert.equal(
          await count({ destinationPort: 80, ipVersion: 4 }),
          expect((r) => r.destinationTransportPort === 80 && r.ipVersion === 4),
        );
        assert.equal(await count({ exporter: 'tcp:192.0.2.77:50000' }), 6);
        assert.equal(
          await count({ endState: 4 }),
          expect((r) => r.flowEndReason === 4),
        );
        assert.equal(
          await count({ startState: 1 }),
          expect((r) => r.flowStartReason === 1),
        );
        assert.equal(await count({ exporter: 'nobody' }), 0);
        // SYN retransmissions: some handshakes had one or two, most none, some never said.
        for (const [i, r] of rows.entries())
          r.synRetransmissionCount = i % 9 === 0 ? 1 + (i % 2) : i % 4 === 1 ? null : 0;
        const s2 = await make();
        try {
          await s2.insert({ profiles: rows, flows: [], exporters: [] });
          const count2 = async (f: Parameters<Store['profiles']>[0]) =>
            (await s2.profiles(f, { limit: 1000, order: 'asc' })).items.length;
          const lost = expect((r) => Number(r.synRetransmissionCount ?? 0) > 0);
          assert.ok(lost > 0);
          assert.equal(await count2({ synRetransmitted: true }), lost);
          assert.equal(await count2({ synRetransmitted: false }), rows.length - lost);
          assert.equal(
            await count2({ synRetransmitted: true, ipVersion: 6 }),
            expect((r) => Number(r.synRetransmissionCount ?? 0) > 0 && r.ipVersion === 6),
          );
          const sum = await s2.summary({ groupBy: 'ipVersion', synRetransmitted: true, limit: 10 });
          assert.equal(
            sum.reduce((a, g) => a + g.profiles, 0),
            lost,
          );
        } finally {
          await s2.close();
        }
      } finally {
        await s.close();
      }
    });

    it('pages through every row exactly once in both orders, rows without a time included', async () => {
      const s = await make();
      try {
        const flows = sampleFlows(95);
        await s.insert({ profiles: [], flows, exporters: [] });
        for (const order of ['asc', 'desc'] as const) {
          const seen: number[] = [];
          let cursor: string | undefined;
          for (let guard = 0; guard < 100; guard++) {
            const page = await s.flows({}, { limit: 7, order, ...(cursor ? { cursor } : {}) });
            seen.push(...page.items.map((r) => r.sourceTransportPort as number));
            if (!page.nextCursor) break;
            cursor = page.nextCursor;
          }
          assert.equal(seen.length, 95, order);
          assert.equal(new Set(seen).size, 95, `${order}: no duplicates`);
        }
        const big = (await s.flows({ protocol: 17 }, { limit: 1, order: 'asc' })).items[0]!;
        assert.equal(BigInt(big.octetDeltaCount as number | bigint), 2n ** 60n);
      } finally {
        await s.close();
      }
    });

    it('returns a connection as all its profiles in time order', async () => {
      const s = await make();
      try {
        const rows = sampleProfiles(200);
        await s.insert({ profiles: [...rows].reverse(), flows: [], exporters: [] });
        const c = await s.connection(1007);
        const expected = rows.filter((r) => r.flowId === 1007).map((r) => r.flowStartMilliseconds);
        assert.deepEqual(
          c.map((r) => r.flowStartMilliseconds),
          expected,
        );
        assert.deepEqual(await s.connection(99999), []);
      } finally {
        await s.close();
      }
    });

    it('summarises by destination with sums, connections and RTT percentiles, in time buckets', async () => {
      const s = await make();
      try {
        const rows = sampleProfiles(300);
        await s.insert({ profiles: rows, flows: [], exporters: [] });
        const sum = await s.summary({ groupBy: 'destination', limit: 10 });
        assert.equal(sum.length, 3);
        for (const g of sum) {
          const mine = rows.filter((r) => r.destinationAddress === g.key);
          assert.equal(g.profiles, mine.length);
          assert.equal(g.connections, new Set(mine.map((r) => r.flowId)).size);
          assert.equal(
            g.transferredOctetTotalCount,
            mine.reduce((a, r) => a + (r.transferredOctetTotalCount as number), 0),
          );
          assert.equal(
            g.stallCount,
            mine.reduce((a, r) => a + (r.stallCount as number), 0),
          );
          const rtt = mine.map((r) => r.meanLatencyMilliseconds as number).sort((a, b) => a - b);
          assert.equal(g.rtt?.p50, pct(rtt, 50));
          assert.equal(g.rtt?.p90, pct(rtt, 90));
          assert.equal(g.rtt?.p99, pct(rtt, 99));
          const tte = mine
            .map((r) => r.timeToEstablishMilliseconds)
            .filter((x): x is number => typeof x === 'number')
            .sort((a, b) => a - b);
          assert.equal(g.timeToEstablish?.p50, pct(tte, 50));
        }
        // A limit that cuts groups off leaves the percentiles of the groups returned as they were.
        const top = await s.summary({ groupBy: 'destination', limit: 2 });
        assert.equal(top.length, 2);
        for (const g of top)
          assert.deepEqual(
            g,
            sum.find((x) => x.key === g.key),
          );
        const buckets = await s.summary({ groupBy: 'ipVersion', bucketMs: 60_000, limit: 1000 });
        const expected = new Map<string, number>();
        for (const r of rows) {
          const b = Math.floor((r.flowStartMilliseconds as number) / 60_000) * 60_000;
          const k = `${r.ipVersion}/${b}`;
          expected.set(k, (expected.get(k) ?? 0) + 1);
        }
        assert.equal(buckets.length, expected.size);
        for (const g of buckets)
          assert.equal(g.profiles, expected.get(`${g.key}/${g.bucket}`), `${g.key}/${g.bucket}`);
        const byState = await s.summary({ groupBy: 'endState', limit: 10, from: T0, to: T0 + 100_000 });
        assert.equal(
          byState.reduce((a, g) => a + g.profiles, 0),
          100,
        );
      } finally {
        await s.close();
      }
    });

    it('accumulates exporter accounting across batches', async () => {
      const s = await make();
      try {
        const base = {
          exporter: 'udp:192.0.2.9:4739',
          transport: 'udp',
          address: '192.0.2.9',
          port: 4739,
          profiles: 0,
          flows: 0,
          decodeErrors: 0,
        };
        await s.insert({
          profiles: [],
          flows: [],
          exporters: [{ ...base, lastSeen: T0, records: 10, lostRecords: 2, templateIds: [256] }],
        });
        await s.insert({
          profiles: [],
          flows: [],
          exporters: [
            {
              ...base,
              lastSeen: T0 + 5,
              records: 5,
              lostRecords: 1,
              decodeErrors: 3,
              templateIds: [256, 47561],
            },
          ],
        });
        const [e] = await s.exporters();
        assert.deepEqual(
          {
            records: e!.records,
            lost: e!.lostRecords,
            errors: e!.decodeErrors,
            last: e!.lastSeen,
            first: e!.firstSeen,
            t: e!.templateIds,
          },
          { records: 15, lost: 3, errors: 3, last: T0 + 5, first: T0, t: [256, 47561] },
        );
      } finally {
        await s.close();
      }
    });

    it('deletes old rows in bounded steps', async () => {
      const s = await make();
      try {
        await s.insert({ profiles: sampleProfiles(100), flows: sampleFlows(50), exporters: [] });
        const cut = T0 + 60_000;
        assert.equal(await s.deleteOlderThan(cut, 25), 25);
        let total = 25;
        for (let n = await s.deleteOlderThan(cut, 25); n > 0; n = await s.deleteOlderThan(cut, 25))
          total += n;
        // 60 profiles and the 45 flows with a time before the cut.
        assert.equal(total, 60 + 45);
        assert.equal((await s.profiles({}, { limit: 1000, order: 'asc' })).items.length, 40);
        assert.ok((await s.sizeBytes()) > 0);
      } finally {
        await s.close();
      }
    });
  });
}
