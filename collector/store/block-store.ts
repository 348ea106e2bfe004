/**
 * The SQLite store with profiles in the blocks layout (docs/storage.md): column blocks with zone
 * maps, pre-aggregates and bloom filters, one SQL row per ingest batch. Flows, exporters and the
 * write path (writer thread, one transaction per batch) are those of SqliteStore.
 */
import { SqliteStore, type SqliteStoreOptions } from './sqlite-store.js';

/** SqliteStore with `layout: 'blocks'`. */
export class BlockStore extends SqliteStore {
  constructor(options: Omit<SqliteStoreOptions, 'layout'>) {
    super({ ...options, layout: 'blocks' });
  }
}
