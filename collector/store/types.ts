/**
 * The store interface every backend (SQLite, ClickHouse) implements, and the rows it keeps.
 * Column names are IPFIX element names wherever an element exists, so the API can return rows
 * as they are. One conformance suite (test/collector/store-conformance.ts) runs on every backend.
 */
import type { PackedBatch } from './packed-batch.js';

/** A stored column value. */
export type Scalar = number | bigint | string | null;

/** One performance profile (a record of a profile template). */
export interface ProfileRow {
  /** Exporter key (`udp:198.51.100.1:4739`, `tcp:...`, `file:NAME`). */
  exporter: string;
  observationDomainId: number;
  templateId: number;
  /** When the collector received it, ms since the epoch. */
  receivedMilliseconds: number;
  /** JSON object of the record's fields that have no column of their own, or null. */
  extra: string | null;
  [column: string]: Scalar;
}

/** One record of any other template (plain flows from softflowd, pmacct, routers...). */
export interface FlowRow {
  exporter: string;
  observationDomainId: number;
  templateId: number;
  receivedMilliseconds: number;
  flowStartMilliseconds: number | null;
  flowEndMilliseconds: number | null;
  protocolIdentifier: number | null;
  ipVersion: number | null;
  sourceAddress: string | null;
  destinationAddress: string | null;
  sourceTransportPort: number | null;
  destinationTransportPort: number | null;
  octetDeltaCount: number | bigint | null;
  packetDeltaCount: number | bigint | null;
  /** JSON object of every field of the record, lossless (64-bit integers exact, bytes as hex). */
  fields: string;
}

/** Accounting of one exporter since the last batch (counters are increments). */
export interface ExporterDelta {
  exporter: string;
  transport: string;
  address: string | null;
  port: number | null;
  lastSeen: number;
  records: number;
  profiles: number;
  flows: number;
  lostRecords: number;
  decodeErrors: number;
  /** Current template ids (absolute, not an increment). */
  templateIds: number[];
}

/** What one flush writes, in one transaction. */
export interface IngestBatch {
  profiles: ProfileRow[];
  flows: FlowRow[];
  exporters: ExporterDelta[];
}

/** Filters shared by the list and summary queries. */
export interface RowFilter {
  /** Inclusive lower bound on flowStartMilliseconds. */
  from?: number;
  /** Exclusive upper bound on flowStartMilliseconds. */
  to?: number;
  /** Matches the source or the destination address. */
  address?: string;
  sourceAddress?: string;
  destinationAddress?: string;
  /** Matches the source or the destination port. */
  port?: number;
  sourcePort?: number;
  destinationPort?: number;
  exporter?: string;
  templateId?: number;
  ipVersion?: number;
  /** flowStartReason (profiles only). */
  startState?: number;
  /** flowEndReason (profiles only). */
  endState?: number;
  /** true: synRetransmissionCount > 0; false: none (profiles only). */
  synRetransmitted?: boolean;
  /** protocolIdentifier (flows only). */
  protocol?: number;
}

/** A page request: keyset pagination on (flowStartMilliseconds, id). */
export interface PageRequest {
  limit: number;
  cursor?: string;
  order: 'asc' | 'desc';
}

/** A page of rows and the cursor of the next one (null at the end). */
export interface Page<T> {
  items: (T & { id: number })[];
  nextCursor: string | null;
}

/** What a summary groups by. */
export type SummaryGroup = 'destination' | 'destinationPort' | 'ipVersion' | 'exporter' | 'endState';

/** A summary request. */
export interface SummaryQuery extends RowFilter {
  groupBy: SummaryGroup;
  /** Time bucket width in ms; absent: one bucket for the whole range. */
  bucketMs?: number;
  /** Most groups returned (largest first by profile count). */
  limit: number;
}

/** One group (and time bucket) of a summary. */
export interface SummaryRow {
  key: string | number | null;
  /** Start of the time bucket, ms; null without buckets. */
  bucket: number | null;
  profiles: number;
  /**
   * Distinct connections (flowId). With `approximate`: in SQLite's blocks layout a sum of
   * per-block distinct counts, an upper bound (a connection whose profiles lie in several blocks
   * counts once per block); in ClickHouse an estimate (uniq over hourly roll-ups).
   */
  connections: number;
  transferredOctetTotalCount: number;
  receivedOctetTotalCount: number;
  retransmittedPacketTotalCount: number;
  stallCount: number;
  duplicatePacketTotalCount: number;
  reorderingPacketCount: number;
  /** RTT statistics in ms over profiles that carry an RTT; null when none does. */
  rtt: { mean: number; p50: number; p90: number; p95: number; p99: number } | null;
  /** Time to establish statistics in ms over establishment profiles; null when none. */
  timeToEstablish: { mean: number; p50: number; p90: number } | null;
  /**
   * Set when the group used pre-aggregates (large ranges): in SQLite's blocks layout percentiles
   * come from log histograms (within 2.2 %) and `connections` is an upper bound; in ClickHouse
   * from t-digests of hourly roll-ups, and `connections` is an estimate. Counts, sums and means
   * stay exact. Absent when every row was read.
   */
  approximate?: true;
}

/** One exporter's accounting. */
export interface ExporterRow {
  exporter: string;
  transport: string;
  address: string | null;
  port: number | null;
  firstSeen: number;
  lastSeen: number;
  records: number;
  profiles: number;
  flows: number;
  lostRecords: number;
  decodeErrors: number;
  templateIds: number[];
}

/**
 * What a store that queues writes (ClickHouse's spool) holds and has done; counters count since
 * the process started.
 */
export interface StoreBacklog {
  /** Batches accepted and not yet in the backend. */
  pendingBatches: number;
  pendingRows: number;
  /** Bytes of batches kept in files until the backend takes them. */
  spoolBytes: number;
  /** Batches written to files (the backend was slow or down). */
  spooledBatches: number;
  deliveredRows: number;
  /** Failed writes to the backend (each retry counts). */
  failedSends: number;
  /** Rows the backend refused as malformed (set aside, not retried). */
  rejectedRows: number;
  /** Rows refused because the spool was full (counted as lost by ingest). */
  refusedRows: number;
  /** True from a failed write until one succeeds. */
  failing: boolean;
  lastError: string | null;
  /** Age of the oldest batch waiting, ms. */
  oldestAgeMs: number;
}

/** A storage backend. */
export interface Store {
  readonly kind: string;
  /** Writes a batch of row objects atomically. */
  insert(batch: IngestBatch): Promise<void>;
  /** Writes a batch packed by columns (what ingest builds) atomically. */
  insertPacked(batch: PackedBatch): Promise<void>;
  profiles(filter: RowFilter, page: PageRequest): Promise<Page<ProfileRow>>;
  /** Every profile of one connection, in time order. */
  connection(flowId: number | bigint): Promise<(ProfileRow & { id: number })[]>;
  summary(query: SummaryQuery): Promise<SummaryRow[]>;
  flows(filter: RowFilter, page: PageRequest): Promise<Page<FlowRow>>;
  exporters(): Promise<ExporterRow[]>;
  /** Deletes at most `maxRows` rows older than `beforeMs` (profiles, then flows); returns how many. */
  deleteOlderThan(beforeMs: number, maxRows: number): Promise<number>;
  /** Bytes the store takes on disk. */
  sizeBytes(): Promise<number>;
  /** What a store that queues writes holds (absent or null: writes are done when insert resolves). */
  backlog?(): StoreBacklog | null;
  close(): Promise<void>;
}
