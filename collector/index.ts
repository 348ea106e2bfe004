/**
 * collector/: IPFIX in (UDP, TCP, TLS, files), stored in SQLite, served over HTTP.
 */
export { type Collector, openStore, spoolDir, startCollector } from './collector.js';
export {
  COLLECTOR_DEFAULTS,
  COLLECTOR_FLAGS,
  type CollectorConfig,
  parseCollectorArgs,
  parseDuration,
  parseEndpoint,
} from './config.js';
export { COL_ERRORS, CollectorError, type CollectorErrorCode } from './errors.js';
export { Ingest, type IngestCounters, type IngestOptions } from './ingest.js';
export {
  type Endpoint,
  ingestFile,
  type Listener,
  listenStream,
  listenUdp,
  transportCounters,
} from './listeners.js';
export { isProfileTemplate, PROFILE_TEMPLATES, STATE_NAMES, stateNumber } from './profile-schema.js';
export { SqliteStore } from './store/sqlite-store.js';
export type * from './store/types.js';
