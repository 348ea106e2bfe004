/**
 * agent/: probe events → connection table + FSM → profile builder → IPFIX exporter. The one
 * public entry of the agent box.
 */
export { Agent, type AgentEnd, type AgentOptions, type AgentStats, type EventRecorder } from './agent.js';
export {
  AGENT_DEFAULTS,
  AGENT_USAGE,
  type AgentConfig,
  parseAgentArgs,
  parseDuration,
  parseHostPort,
  parseSize,
  parseSource,
  type SourceSpec,
} from './config.js';
export {
  type Connection,
  ConnectionTable,
  type ConnectionTableOptions,
  type ConnectionTableStats,
  type ProfileWindow,
  type Snapshot,
  ZERO_ANCILLARY,
  ZERO_COUNTERS,
} from './connection-table.js';
export { AGT_ERRORS, AgentError, type AgentErrorCode } from './errors.js';
export {
  copyEventFile,
  EVENT_FILE_VERSION,
  type EventFileHeader,
  type EventFileInfo,
  EventFileReader,
  type EventFileRecord,
  EventFileSource,
  type EventFileSourceStats,
  EventFileWriter,
  type EventFileWriterOptions,
  eventFileClock,
  openEventFileSource,
  readEventFileInfo,
} from './event-file.js';
export {
  type EventSink,
  type EventSource,
  IterableSource,
  MemorySource,
  type SourceItem,
} from './event-source.js';
export {
  type ExportTarget,
  formatExportTarget,
  IPFIX_PORT,
  IPFIX_TLS_PORT,
  parseExportTarget,
} from './export-target.js';
export {
  Exporter,
  type ExporterOptions,
  type ExporterStats,
  type ExporterTlsOptions,
} from './exporter.js';
export {
  type ClassifyContext,
  classify,
  FSM_INPUTS,
  type FsmInput,
  isFinState,
  isTerminal,
  next,
  resumeState,
  STATE,
  STATE_NAME,
  STATES,
  type State,
  TCP_CA_OPEN,
  TCP_STATE,
  TRANSITIONS,
  type Transition,
  tcpStateBefore,
} from './fsm.js';
export { type LiveSourceOptions, openLiveSource } from './live-source.js';
export { AGENT_METRIC_PREFIX, createAgentRegistry } from './metrics.js';
export {
  type MptcpConnection,
  type MptcpSnapshot,
  MptcpTable,
  type MptcpTableOptions,
  type MptcpWindow,
} from './mptcp-table.js';
export {
  type AncillaryCounters,
  EVENT_KIND,
  type EventKind,
  type MptcpCounters,
  type MptcpIdentity,
  mptcpCounters,
  type ProbeEvent,
  type TcpCounters,
} from './probe-event.js';
export {
  type AgentClock,
  defaultBootId,
  flowIdOf,
  measureClockOffset,
  mptcpFlowIdOf,
  type Profile,
  ProfileBuilder,
  type ProfileBuilderOptions,
  type ProfileBuilderStats,
  systemClock,
} from './profile-builder.js';
export {
  ProfileQueue,
  type ProfileQueueOptions,
  parseSpoolLine,
  type QueueDrops,
  spoolLine,
} from './profile-queue.js';
export {
  addressBytes,
  availableKpis,
  type KpiField,
  MPTCP_META_KPI_FIELDS,
  MPTCP_PROBE_FIELDS,
  MPTCP_SUBFLOW_KPI_FIELDS,
  mappedAddress,
  mptcpMetaFields,
  mptcpSubflowFields,
  mptcpUnmeasuredFields,
  PROFILE_IDENTITY_FIELDS,
  PROFILE_TEMPLATE_IDS,
  type ProfileTemplate,
  profileTemplates,
  TCP_KPI_FIELDS,
  tcpProfileFields,
} from './profile-templates.js';
