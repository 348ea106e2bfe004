/** The blocks layout: the store conformance suite, plus what only blocks have. */

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { ProfileRow, RowFilter, Store, SummaryRow } from '../../collector/index.js';
import { SqliteStore } from '../../collector/index.js';
import { BlockStore } from '../../collector/store/block-store.js';
import { BLOCK_MAX_ROWS, encodeBlock, ProfileBlock } from '../../collector/store/profile-block.js';
import { tablePackers } from '../../collector/store/sqlite-writer.js';
import { sampleProfiles, storeConformance } from './store-conformance.js';

const dir = mkdtempSync(join(tmpdir(), 'kpiflow-blocks-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

storeConformance('sqlite blocks', async () => new BlockStore({ path: join(dir, `conf-${n++}.db`) }));
storeConformance(
  'sqlite blocks, writer thread',
  async () => new SqliteStore({ path: join(dir, `conf-${n++}.db`), writerThread: true, layout: 'blocks' }),
);

const T0 = Date.UTC(2026, 0, 1);

/**
 * Profiles spread over 3 hours in batches whose time ranges overlap (long connections report
 * late), with nulls, a 64-bit flowId and values past 2^53, so blocks overlap in their zone maps.
 */
function overlappingBatches(batches: number, perBatch: number): ProfileRow[][] {
  const out: ProfileRow[][] = [];
  let k = 0;
  for (let b = 0; b < batches; b++) {
    const rows = sampleProfiles(perBatch, b % 3 ? 'udp:192.0.2.9:4739' : 'tcp:192.0.2.10:4739');
    for (const [i, r] of rows.entries()) {
      k++;
      // Mostly recent to the batch; in every 4th batch some from hours ago; some identical times.
      const t =
        T0 + b * 60_000 + ((i * 7919) % 50) * 1000 - (b % 4 === 0 && i % 9 === 0 ? (i % 5) * 3_600_000 : 0);
      r.flowStartMilliseconds = i % 23 === 0 ? null : t - (t % 3000);
      r.receivedMilliseconds = T0 + b * 60_000 + 55_000;
      r.flowId = k % 50 === 0 ? 2n ** 64n - BigInt(k % 7) : 5000 + ((k * 31) % 400);
      r.transferredOctetTotalCount = k % 97 === 0 ? 2n ** 60n + BigInt(k) : k * 3;
      r.meanLatencyMicroseconds = i % 4 === 0 ? null : 500 + ((k * 13) % 90_000);
      r.meanLatencyMilliseconds = i % 4 === 0 ? 1 + (k % 300) : null;
      r.destinationAddress = i % 11 === 0 ? null : `198.51.100.${k % 37}`;
    }
    out.push(rows);
  }
  return out;
}

async function both(batches: ProfileRow[][], opts: { exactSummaryRows?: number } = {}) {
  const rows = new SqliteStore({ path: join(dir, `oracle-${n++}.db`) });
  const blocks = new BlockStore({ path: join(dir, `blocks-${n++}.db`), ...opts });
  for (const b of batches) {
    await rows.insert({ profiles: b, flows: [], exporters: [] });
    await blocks.insert({ profiles: b, flows: [], exporters: [] });
  }
  return { rows, blocks };
}

const SUMS = [
  'transferredOctetTotalCount',
  'receivedOctetTotalCount',
  'retransmittedPacketTotalCount',
  'stallCount',
  'duplicatePacketTotalCount',
  'reorderingPacketCount',
] as const;

/**
 * `got` with its sums replaced by the expected ones where both are doubles past 2^53 and agree
 * to 1e-12: there, both layouts round (SQLite's TOTAL with compensated summation, JS plainly).
 */
function roundedLike(got: SummaryRow[], expected: SummaryRow[]): SummaryRow[] {
  return got.map((g, i) => {
    const e = expected[i];
    if (!e) return g;
    const out = { ...g };
    for (const k of SUMS)
      if (Math.abs(e[k]) > 2 ** 53 && Math.abs(g[k] - e[k]) <= Math.abs(e[k]) * 1e-12) out[k] = e[k];
    return out;
  });
}

async function walk(s: Store, f: RowFilter, order: 'asc' | 'desc', limit: number) {
  const out: (ProfileRow & { id: number })[] = [];
  let cursor: string | undefined;
  for (let guard = 0; guard < 10_000; guard++) {
    const p = await s.profiles(f, { limit, order, ...(cursor ? { cursor } : {}) });
    out.push(...p.items);
    if (!p.nextCursor) return out;
    cursor = p.nextCursor;
  }
  throw new Error('no end');
}

/**
 * Summaries of the blocks store against the rows store: exact counts and sums, connections an
 * upper bound, percentiles within 2.2 % where pre-aggregates (flagged approximate) were used.
 */
async function sameSummaries(rows: Store, blocks: Store, label: string): Promise<void> {
  let approximate = 0;
  for (const q of [
    { groupBy: 'destination' as const },
    { groupBy: 'ipVersion' as const, bucketMs: 3_600_000 },
    { groupBy: 'destination' as const, bucketMs: 3_600_000 },
    { groupBy: 'endState' as const, from: T0 - 3_600_000, to: T0 + 300_000 },
    { groupBy: 'exporter' as const, from: T0 - 3.5 * 3_600_000, to: T0 - 1_200_000 },
  ]) {
    const a = await rows.summary({ limit: 1000, ...q });
    const b = await blocks.summary({ limit: 1000, ...q });
    assert.equal(b.length, a.length, `${label} ${JSON.stringify(q)}: groups`);
    // A small limit keeps the same leading groups, in the same order.
    const top = (r: SummaryRow[]) => r.map((g) => [g.key, g.bucket, g.profiles]);
    assert.deepEqual(
      top(await blocks.summary({ limit: 2, ...q })),
      top(await rows.summary({ limit: 2, ...q })),
      `${label} ${JSON.stringify(q)}: limit 2`,
    );
    for (const g of b) {
      const e = a.find((x) => x.key === g.key && x.bucket === g.bucket)!;
      assert.ok(e, `${label}: ${g.key}/${g.bucket}`);
      const { rtt, timeToEstablish, approximate: approx, connections, ...exact } = g;
      const { rtt: er, timeToEstablish: et, connections: ec, ...expected } = e;
      assert.deepEqual(
        roundedLike([exact as SummaryRow], [expected as SummaryRow])[0],
        expected,
        `${label} ${JSON.stringify(q)}`,
      );
      if (!approx) {
        assert.deepEqual([rtt, timeToEstablish, connections], [er, et, ec]);
        continue;
      }
      approximate++;
      assert.ok(connections >= ec, 'connections is an upper bound');
      const near = (x: number | undefined, y: number | undefined) =>
        assert.ok(Math.abs(x! - y!) <= y! * 0.022 + 1e-9, `${label}: ${x} vs ${y}`);
      assert.ok(Math.abs(rtt!.mean - er!.mean) < 1e-6 * er!.mean);
      for (const p of ['p50', 'p90', 'p95', 'p99'] as const) near(rtt![p], er![p]);
      if (et) for (const p of ['p50', 'p90'] as const) near(timeToEstablish![p], et[p]);
    }
  }
  assert.ok(approximate > 0, `${label}: some group used pre-aggregates`);
}

describe('blocks layout against the rows layout', () => {
  it('returns the same pages, in the same order, with every column equal, for filters and both orders', async () => {
    const { rows, blocks } = await both(overlappingBatches(12, 300));
    try {
      const filters: RowFilter[] = [
        {},
        { from: T0 + 120_000, to: T0 + 400_000 },
        { destinationAddress: '198.51.100.5' },
        { address: '198.51.100.7', port: 443 },
        { exporter: 'tcp:192.0.2.10:4739', endState: 4 },
        { sourceAddress: '2001:db8::1', ipVersion: 6 },
        { destinationAddress: '203.0.113.99' },
      ];
      for (const f of filters)
        for (const order of ['asc', 'desc'] as const)
          for (const limit of [1, 37, 1000]) {
            const a = await walk(rows, f, order, limit);
            const b = await walk(blocks, f, order, limit);
            assert.deepEqual(
              b.map((r) => r.id),
              a.map((r) => r.id),
              `${JSON.stringify(f)} ${order} ${limit}`,
            );
            for (const [i, r] of a.entries())
              for (const [k, v] of Object.entries(r))
                assert.deepEqual(b[i]![k] ?? null, v ?? null, `id ${r.id} ${k}`);
          }
    } finally {
      await rows.close();
      await blocks.close();
    }
  });

  it('finds connections (64-bit flowIds too) and summarises exactly like rows on small ranges', async () => {
    const { rows, blocks } = await both(overlappingBatches(6, 250));
    try {
      for (const id of [5000, 5031, 5399, 2n ** 64n - 1n, 2n ** 64n - 3n, 424242]) {
        assert.deepEqual(
          (await blocks.connection(id)).map((r) => r.id),
          (await rows.connection(id)).map((r) => r.id),
          String(id),
        );
      }
      for (const groupBy of ['destination', 'destinationPort', 'ipVersion', 'exporter', 'endState'] as const)
        for (const q of [{}, { bucketMs: 600_000 }, { from: T0 + 60_000, to: T0 + 200_000, port: 80 }]) {
          const a = await rows.summary({ groupBy, limit: 1000, ...q });
          const b = await blocks.summary({ groupBy, limit: 1000, ...q });
          assert.deepEqual(roundedLike(b, a), a, `${groupBy} ${JSON.stringify(q)}`);
        }
    } finally {
      await rows.close();
      await blocks.close();
    }
  });

  it('summarises large ranges from pre-aggregates: exact counts and sums, percentiles within 2.2 %, flagged', async () => {
    const { rows, blocks } = await both(overlappingBatches(10, 400), { exactSummaryRows: 0 });
    try {
      await sameSummaries(rows, blocks, 'block pre-aggregates');
    } finally {
      await rows.close();
      await blocks.close();
    }
  });

  it('summarises from hourly roll-ups the same, with late profiles and after retention', async () => {
    const batches = overlappingBatches(10, 400);
    const { rows, blocks } = await both(batches, { exactSummaryRows: 0 });
    try {
      const store = blocks as SqliteStore;
      // Nothing is rolled up before its hour has ended (plus the grace period).
      assert.equal(await store.buildRollups(T0 - 4 * 3_600_000), 0);
      // With no time budget, each call merges one block (or hour) and stops: a roll-up takes
      // several calls, and what the calls build is the same as building it in one go.
      let built = 0;
      let calls = 0;
      for (let idle = 0; idle < 100 && calls < 10_000; calls++) {
        const b = await store.buildRollups(T0 + 10 * 3_600_000, Number.POSITIVE_INFINITY, 0);
        built += b;
        idle = b ? 0 : idle + 1;
      }
      calls -= 100;
      assert.ok(built >= 4 + 2, `${built} hours and days rolled up`);
      assert.ok(calls > built, `${calls} calls for ${built} roll-ups`);
      assert.equal(await store.buildRollups(T0 + 10 * 3_600_000), 0, 'nothing left to roll up');
      await sameSummaries(rows, blocks, 'roll-ups');
      // Late profiles for hours already rolled up: read from their blocks until rolled up again.
      const late = overlappingBatches(1, 1200)[0]!.map((r, i) => ({
        ...r,
        flowStartMilliseconds: T0 - 3_600_000 + i * 2000,
      }));
      for (const s of [rows, blocks]) await s.insert({ profiles: late, flows: [], exporters: [] });
      await sameSummaries(rows, blocks, 'roll-ups and late blocks');
      assert.equal(
        await store.buildRollups(T0 + 10 * 3_600_000),
        2,
        'the late hour and its day are rolled up again',
      );
      await sameSummaries(rows, blocks, 'roll-ups rebuilt');
      // Retention in the middle of a rolled-up hour.
      const cut = T0 - 2.5 * 3_600_000;
      for (const s of [rows, blocks]) while ((await s.deleteOlderThan(cut, 500)) > 0);
      await sameSummaries(rows, blocks, 'roll-ups after retention');
      await store.buildRollups(T0 + 10 * 3_600_000);
      await sameSummaries(rows, blocks, 'roll-ups after retention, rebuilt');
    } finally {
      await rows.close();
      await blocks.close();
    }
  });

  it('deletes old profiles exactly, rewriting the block at the cutoff and keeping the ids of the rest', async () => {
    const { rows, blocks } = await both(overlappingBatches(5, 200));
    try {
      const cut = T0 + 100_000;
      for (const s of [rows, blocks]) while ((await s.deleteOlderThan(cut, 33)) > 0);
      const a = await walk(rows, {}, 'asc', 5000);
      const b = await walk(blocks, {}, 'asc', 5000);
      assert.ok(a.length > 0 && a.length < 1000);
      assert.deepEqual(
        b.map((r) => r.id),
        a.map((r) => r.id),
      );
      assert.deepEqual(
        (await blocks.connection(5031)).map((r) => r.id),
        (await rows.connection(5031)).map((r) => r.id),
      );
    } finally {
      await rows.close();
      await blocks.close();
    }
  });
});

describe('blocks layout storage', () => {
  it('refuses a database holding profiles in the other layout with COL_ERR_SCHEMA naming the option', async () => {
    const path = join(dir, 'rows-then-blocks.db');
    const r = new SqliteStore({ path });
    await r.insert({ profiles: sampleProfiles(3), flows: [], exporters: [] });
    await r.close();
    assert.throws(
      () => new BlockStore({ path }),
      (e: unknown) =>
        (e as { code?: string }).code === 'COL_ERR_SCHEMA' &&
        /--sqlite-layout rows/.test((e as Error).message),
    );
    const path2 = join(dir, 'blocks-then-rows.db');
    const b = new BlockStore({ path: path2 });
    await b.insert({ profiles: sampleProfiles(3), flows: [], exporters: [] });
    await b.close();
    assert.throws(
      () => new SqliteStore({ path: path2 }),
      (e: unknown) =>
        (e as { code?: string }).code === 'COL_ERR_SCHEMA' &&
        /--sqlite-layout blocks/.test((e as Error).message),
    );
    const ro = new SqliteStore({ path: path2, readonly: true });
    assert.equal(ro.layout, 'blocks');
    assert.equal((await ro.profiles({}, { limit: 10, order: 'asc' })).items.length, 3);
    await ro.close();
  });

  it('splits a batch larger than a block and reads a BLOB that is not 8-byte aligned', async () => {
    const s = new BlockStore({ path: join(dir, `big-${n++}.db`) });
    try {
      const rows = sampleProfiles(BLOCK_MAX_ROWS + 10);
      await s.insert({ profiles: rows, flows: [], exporters: [] });
      const all = await walk(s, {}, 'asc', 3000);
      assert.equal(all.length, rows.length);
      assert.equal(new Set(all.map((r) => r.id)).size, rows.length);
    } finally {
      await s.close();
    }
    const table = tablePackers().profiles.packRows(sampleProfiles(50));
    const enc = encodeBlock(
      table,
      Float64Array.from({ length: 50 }, (_, i) => i + 1),
    );
    const shifted = new Uint8Array(enc.data.length + 4);
    shifted.set(enc.data, 4);
    const blk = new ProfileBlock(1, shifted.subarray(4));
    assert.equal(blk.n, 50);
    assert.equal(blk.str('destinationAddress')?.get(2), '2001:db8::7');
    assert.equal(blk.num('transferredOctetTotalCount')?.get(49), 4900);
  });
});
