/** The blocks layout: the store conformance suite, plus what only blocks have. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { SqliteStore } from '../../collector/index.js';
import { BlockStore } from '../../collector/store/block-store.js';
import { storeConformance } from './store-conformance.js';

const dir = mkdtempSync(join(tmpdir(), 'kpiflow-blocks-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

storeConformance('sqlite blocks', async () => new BlockStore({ path: join(dir, `conf-${n++}.db`) }));
storeConformance(
  'sqlite blocks, writer thread',
  async () => new SqliteStore({ path: join(dir, `conf-${n++}.db`), writerThread: true, layout: 'blocks' }),
);
