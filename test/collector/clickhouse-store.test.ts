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
import { ClickHouseStore } from '../../collector/store/clickhouse-store.js';
import type { Store } from '../../collector/store/types.js';
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
  async function settled(): Promise<Store> {
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
