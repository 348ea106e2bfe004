/**
 * The ClickHouse store against a real server (Debian's clickhouse-server, started here on
 * loopback ports with its data in a temporary folder): the store conformance suite, the schema
 * migration run twice, and the SQL literal escaping of filter values.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { hasTableTtl, parseVersion } from '../../collector/store/clickhouse-schema.js';
import { ClickHouseStore } from '../../collector/store/clickhouse-store.js';
import { CLICKHOUSE_SERVER, ClickHouseServer } from '../helpers/clickhouse-server.js';
import { hasTool, IN_CI } from '../helpers/tools.js';
import { sampleProfiles, storeConformance } from './store-conformance.js';

const available = hasTool(CLICKHOUSE_SERVER);
if (!available && IN_CI)
  throw new Error(`${CLICKHOUSE_SERVER} is not installed; under CI every test must run`);

if (!available) {
  describe('ClickHouse store', () => {
    it('needs clickhouse-server', (t) => {
      process.stderr.write(`\n*** SKIPPED: ${CLICKHOUSE_SERVER} not installed (make test installs it) ***\n`);
      t.skip(`${CLICKHOUSE_SERVER} not installed (make test installs it)`);
    });
  });
} else {
  let server: ClickHouseServer;
  const dir = mkdtempSync(join(tmpdir(), 'kpiflow-chstore-'));
  let n = 0;
  before(async () => {
    server = await ClickHouseServer.start();
  });
  after(async () => {
    await server?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A store on a database of its own; writes are flushed before each read, as the API's would settle. */
  async function open(): Promise<ClickHouseStore> {
    const k = n++;
    return ClickHouseStore.open({ url: server.url(`conf_${k}`), spoolDir: join(dir, `spool-${k}`) });
  }

  /** Conformance wants read-after-write: a store whose inserts resolve once ClickHouse has them. */
  async function settled(): Promise<ClickHouseStore> {
    const s = await open();
    const insert = s.insert.bind(s);
    const insertPacked = s.insertPacked.bind(s);
    s.insert = async (b) => {
      await insert(b);
      assert.ok(await s.flush(30_000), 'the batch reached ClickHouse');
    };
    s.insertPacked = async (b) => {
      await insertPacked(b);
      assert.ok(await s.flush(30_000), 'the batch reached ClickHouse');
    };
    return s;
  }

  storeConformance('clickhouse', settled);

  describe('ClickHouse versions', () => {
    it('knows which releases have table TTL', () => {
      assert.deepEqual(parseVersion('18.16.1'), { major: 18, minor: 16, text: '18.16.1' });
      assert.equal(hasTableTtl(parseVersion('18.16.1')), false);
      assert.equal(hasTableTtl(parseVersion('19.5.3.8')), false);
      assert.equal(hasTableTtl(parseVersion('19.6.2.11')), true);
      assert.equal(hasTableTtl(parseVersion('24.8.4.13')), true);
    });
  });

  describe('ClickHouse store specifics', () => {
    it('creates the schema idempotently: a second store on the same database migrates nothing', async () => {
      const url = server.url('twice');
      const a = await ClickHouseStore.open({ url, spoolDir: join(dir, 'twice-a') });
      await a.insert({ profiles: sampleProfiles(5), flows: [], exporters: [] });
      assert.ok(await a.flush());
      const b = await ClickHouseStore.open({ url, spoolDir: join(dir, 'twice-b') });
      try {
        assert.equal((await b.profiles({}, { limit: 100, order: 'asc' })).items.length, 5);
        const versions = await server.query(
          'SELECT version FROM twice.schema_migrations ORDER BY version FORMAT TSV',
        );
        assert.equal(versions.trim(), '1');
      } finally {
        await a.close();
        await b.close();
      }
    });

    it('drops whole day partitions past the retention and keeps the day that holds the cut', async () => {
      const s = await settled();
      try {
        const day = 86_400_000;
        const rows = sampleProfiles(30);
        // Three UTC days of 10 profiles each (the samples start at midnight, a second apart).
        for (const [i, r] of rows.entries()) {
          const shift = Math.floor(i / 10) * day;
          r.flowStartMilliseconds = (r.flowStartMilliseconds as number) + shift;
          r.flowEndMilliseconds = (r.flowEndMilliseconds as number) + shift;
        }
        await s.insert({ profiles: rows, flows: [], exporters: [] });
        const t0 = rows[0]!.flowStartMilliseconds as number;
        // A cut in the middle of day 2: day 1 goes whole, day 2 stays whole.
        const dropped = await s.dropPartitionsBefore(t0 + day + day / 2);
        assert.equal(dropped, 10);
        const left = (await s.profiles({}, { limit: 100, order: 'asc' })).items;
        assert.equal(left.length, 20);
        assert.ok(left.every((r) => (r.flowStartMilliseconds as number) >= t0 + day));
        // The connection index lost the day too: its rows are gone from ClickHouse.
        const idx = await server.query(
          `SELECT count() FROM ${s.database}.profile_flows WHERE t < ${t0 + day} FORMAT TSV`,
        );
        assert.equal(idx.trim(), '0');
        assert.equal(await s.dropPartitionsBefore(t0 + day + day / 2), 0);
      } finally {
        await s.close();
      }
    });

    it('starts while ClickHouse is down: batches wait, queries fail naming the URL, all arrive later', async () => {
      const down = await ClickHouseServer.start();
      try {
        await down.stop();
        const s = await ClickHouseStore.open({
          url: down.url('late'),
          spoolDir: join(dir, 'late'),
          retryMs: 100,
        });
        try {
          await s.insert({ profiles: sampleProfiles(12), flows: [], exporters: [] });
          assert.equal(s.backlog()?.pendingRows, 12);
          await assert.rejects(
            s.profiles({}, { limit: 10, order: 'asc' }),
            (err: Error & { code?: string }) => {
              assert.equal(err.code, 'COL_ERR_STORE');
              assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${down.httpPort}/late`));
              return true;
            },
          );
          await down.start();
          assert.ok(await s.flush(30_000), 'delivered once the server answered');
          assert.equal((await down.query('SELECT count() FROM late.profiles FORMAT TSV')).trim(), '12');
          assert.equal(s.version?.major, 18);
        } finally {
          await s.close();
        }
      } finally {
        await down.destroy();
      }
    });

    it('refuses a URL it cannot use with a message naming it', async () => {
      await assert.rejects(
        ClickHouseStore.open({ url: 'not a url', spoolDir: join(dir, 'bad') }),
        /not a URL/,
      );
      await assert.rejects(
        ClickHouseStore.open({ url: 'ftp://127.0.0.1/x', spoolDir: join(dir, 'bad') }),
        /use http:\/\/ or https:\/\//,
      );
      await assert.rejects(
        ClickHouseStore.open({ url: server.url('bad-name'), spoolDir: join(dir, 'bad') }),
        /"bad-name" is not an identifier/,
      );
    });

    for (const set of [
      // 6 hours of profiles, one a minute: hourly roll-ups and raw partial hours.
      { name: 'hours', n: 360, every: 60_000, from: 30 * 60_000, to: 5.5 * 3_600_000, buckets: [3_600_000] },
      // 3 days, one every 10 minutes: 51 whole hours, buckets of an hour and of a day.
      {
        name: 'days',
        n: 432,
        every: 600_000,
        from: 2.5 * 3_600_000,
        to: 2 * 86_400_000 + 5.5 * 3_600_000,
        buckets: [3_600_000, 86_400_000],
      },
    ])
      it(`summarises long ranges from the roll-ups plus the partial hours at the ends (${set.name}): counts and sums exact`, async () => {
        const url = server.url(`rollups_${set.name}`);
        const s = await ClickHouseStore.open({
          url,
          spoolDir: join(dir, `rollups-${set.name}`),
          exactSummaryRows: 0,
        });
        const exact = await ClickHouseStore.open({ url, spoolDir: join(dir, `rollups-exact-${set.name}`) });
        try {
          const rows = sampleProfiles(set.n);
          const t0 = rows[0]!.flowStartMilliseconds as number;
          for (const [i, r] of rows.entries()) {
            r.flowStartMilliseconds = t0 + i * set.every;
            r.flowEndMilliseconds = t0 + i * set.every + 500;
            // Some profiles without a destination, port, IP version or end state: NULL groups.
            if (i % 17 === 3) {
              r.destinationAddress = null;
              r.destinationTransportPort = null;
              r.ipVersion = null;
              r.flowEndReason = null;
            }
          }
          await s.insert({ profiles: rows, flows: [], exporters: [] });
          assert.ok(await s.flush());
          const range = { from: t0 + set.from, to: t0 + set.to };
          const inRange = rows.filter(
            (r) =>
              (r.flowStartMilliseconds as number) >= range.from &&
              (r.flowStartMilliseconds as number) < range.to,
          );
          for (const groupBy of [
            'destination',
            'ipVersion',
            'endState',
            'exporter',
            'destinationPort',
          ] as const) {
            for (const bucketMs of [undefined, ...set.buckets]) {
              const q = { groupBy, limit: 1000, ...range, ...(bucketMs ? { bucketMs } : {}) };
              const approx = await s.summary(q);
              const truth = await exact.summary(q);
              assert.ok(
                approx.length > 0 && approx.every((g) => g.approximate === true),
                `${groupBy}: from roll-ups`,
              );
              assert.ok(
                truth.every((g) => g.approximate === undefined),
                `${groupBy}: exact below the threshold`,
              );
              const byKey = (g: { key: unknown; bucket: unknown }) => `${g.key}/${g.bucket}`;
              assert.deepEqual(
                approx.map(byKey).sort(),
                truth.map(byKey).sort(),
                `${groupBy} ${bucketMs}: groups`,
              );
              for (const g of approx) {
                const t = truth.find((x) => byKey(x) === byKey(g))!;
                for (const k of [
                  'profiles',
                  'transferredOctetTotalCount',
                  'stallCount',
                  'retransmittedPacketTotalCount',
                ] as const)
                  assert.equal(g[k], t[k], `${groupBy} ${byKey(g)} ${k}`);
                assert.equal(
                  g.connections,
                  t.connections,
                  `${groupBy} ${byKey(g)}: few connections are counted exactly`,
                );
                assert.ok(Math.abs(g.rtt!.mean - t.rtt!.mean) < 1e-9, 'means are exact');
                // T-digest percentiles: within 15 percentiles of the group's own values (small groups
                // of 20 values interpolate; the rows, not the store, are the truth).
                const column = {
                  destination: 'destinationAddress',
                  ipVersion: 'ipVersion',
                  endState: 'flowEndReason',
                  exporter: 'exporter',
                  destinationPort: 'destinationTransportPort',
                }[groupBy];
                const values = inRange
                  .filter(
                    (r) =>
                      r[column] === g.key &&
                      (g.bucket === null ||
                        Math.floor((r.flowStartMilliseconds as number) / bucketMs!) * bucketMs! === g.bucket),
                  )
                  .map((r) => r.meanLatencyMilliseconds as number)
                  .sort((a, b) => a - b);
                assert.equal(values.length, g.profiles);
                const rank = (p: number) =>
                  values[Math.min(values.length, Math.max(1, Math.ceil((p / 100) * values.length))) - 1]!;
                for (const [p, v] of [
                  [50, g.rtt!.p50],
                  [90, g.rtt!.p90],
                  [99, g.rtt!.p99],
                ] as const)
                  assert.ok(
                    v >= rank(p - 15) - 1e-9 && v <= rank(Math.min(100, p + 15)) + 1e-9,
                    `${groupBy} ${byKey(g)} p${p}: ${v} outside [${rank(p - 15)}, ${rank(Math.min(100, p + 15))}]`,
                  );
              }
            }
          }
          // A limit keeps the largest groups, the same ones as in the whole list.
          for (const groupBy of ['destination', 'ipVersion', 'destinationPort'] as const)
            for (const limit of [1, 2]) {
              const all = await s.summary({ groupBy, limit: 1000, ...range, bucketMs: 3_600_000 });
              const cut = await s.summary({ groupBy, limit, ...range, bucketMs: 3_600_000 });
              assert.equal(cut.length, limit);
              const facts = (g: (typeof all)[number]) => [
                g.key,
                g.bucket,
                g.profiles,
                g.connections,
                g.stallCount,
              ];
              // Ties in profile count may be cut at a different bucket: compare the counts.
              assert.deepEqual(
                cut.map((g) => g.profiles),
                all.slice(0, limit).map((g) => g.profiles),
                `${groupBy} limit ${limit}`,
              );
              for (const g of cut)
                assert.deepEqual(facts(g), facts(all.find((x) => x.key === g.key && x.bucket === g.bucket)!));
            }
          const total = (await s.summary({ groupBy: 'ipVersion', limit: 10, ...range })).reduce(
            (a, g) => a + g.profiles,
            0,
          );
          assert.equal(total, inRange.length);
          // A filter, a short range or buckets that are not whole hours: exact, from the rows.
          for (const q of [
            { groupBy: 'destination' as const, limit: 10, ...range, ipVersion: 4 },
            { groupBy: 'destination' as const, limit: 10, from: range.from, to: range.from + 2 * 3_600_000 },
            { groupBy: 'destination' as const, limit: 10, ...range, bucketMs: 600_000 },
          ])
            assert.ok(
              (await s.summary(q)).every((g) => g.approximate === undefined),
              JSON.stringify(q),
            );
        } finally {
          await s.close();
          await exact.close();
        }
      });

    it('quotes filter values: quotes and backslashes in an address match only that text', async () => {
      const s = await settled();
      try {
        const rows = sampleProfiles(4);
        rows[0]!.destinationAddress = "x' OR '1'='1";
        rows[1]!.destinationAddress = 'a\\b\ttab';
        await s.insert({ profiles: rows, flows: [], exporters: [] });
        const count = async (a: string) =>
          (await s.profiles({ destinationAddress: a }, { limit: 10, order: 'asc' })).items.length;
        assert.equal(await count("x' OR '1'='1"), 1);
        assert.equal(await count('a\\b\ttab'), 1);
        assert.equal(await count("' OR 1=1 --"), 0);
      } finally {
        await s.close();
      }
    });
  });
}
