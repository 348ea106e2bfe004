/** The SQLite store: the conformance suite, plus what only a file database can show. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { SqliteStore } from '../../collector/index.js';
import { MIGRATIONS } from '../../collector/store/sqlite-writer.js';
import { sampleProfiles, storeConformance } from './store-conformance.js';

const dir = mkdtempSync(join(tmpdir(), 'kpiflow-sqlite-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

storeConformance('sqlite', async () => new SqliteStore({ path: join(dir, `conf-${n++}.db`) }));
storeConformance(
  'sqlite, writer thread',
  async () => new SqliteStore({ path: join(dir, `conf-${n++}.db`), writerThread: true }),
);

describe('SqliteStore files', () => {
  it('keeps data across reopen, in WAL mode, and passes integrity_check', async () => {
    const path = join(dir, 'reopen.db');
    const a = new SqliteStore({ path });
    await a.insert({ profiles: sampleProfiles(10), flows: [], exporters: [] });
    await a.close();
    const b = new SqliteStore({ path });
    assert.equal((await b.profiles({}, { limit: 100, order: 'asc' })).items.length, 10);
    assert.equal(b.integrityCheck(), 'ok');
    await b.close();
    const raw = new Database(path, { readonly: true });
    assert.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
    assert.equal(raw.pragma('user_version', { simple: true }), MIGRATIONS.length);
    raw.close();
  });

  it('migrates a schema 1 database to time-clustered profiles, keeping rows and ids', async () => {
    const path = join(dir, 'v1.db');
    const raw = new Database(path);
    raw.exec(MIGRATIONS[0]!);
    raw.pragma('user_version = 1');
    raw.exec(
      `INSERT INTO exporters (id, key, transport, firstSeen, lastSeen) VALUES (1, 'udp:192.0.2.1:1', 'udp', 1, 1)`,
    );
    raw.exec(`INSERT INTO profiles (id, exporterId, observationDomainId, templateId, receivedMilliseconds, flowId, flowStartMilliseconds)
      VALUES (7, 1, 0, 47561, 5000, 42, 3000), (9, 1, 0, 47561, 4000, 43, NULL)`);
    raw.close();
    const s = new SqliteStore({ path });
    try {
      const before = (await s.profiles({}, { limit: 10, order: 'asc' })).items;
      assert.deepEqual(
        before.map((r) => [r.id, r.flowId]),
        [
          [7, 42],
          [9, 43],
        ],
      );
      await s.insert({ profiles: sampleProfiles(1), flows: [], exporters: [] });
      const ids = (await s.profiles({}, { limit: 10, order: 'asc' })).items.map((r) => r.id);
      assert.equal(new Set(ids).size, 3, 'new profiles get ids after the migrated ones');
      assert.ok(ids.every((id) => id === 7 || id === 9 || id > 9));
      assert.equal(s.integrityCheck(), 'ok');
    } finally {
      await s.close();
    }
  });

  it('refuses a database from a newer collector with COL_ERR_SCHEMA', () => {
    const path = join(dir, 'newer.db');
    const raw = new Database(path);
    raw.pragma('user_version = 99');
    raw.close();
    assert.throws(
      () => new SqliteStore({ path }),
      (e: unknown) =>
        (e as { code?: string }).code === 'COL_ERR_SCHEMA' && /schema 99/.test((e as Error).message),
    );
  });

  it('rejects a cursor it did not issue with COL_ERR_BAD_QUERY', async () => {
    const s = new SqliteStore({ path: ':memory:' });
    await assert.rejects(
      () => s.profiles({}, { limit: 10, order: 'asc', cursor: '1; DROP TABLE profiles' }),
      (e: unknown) => (e as { code?: string }).code === 'COL_ERR_BAD_QUERY',
    );
    await s.close();
  });
});
