/**
 * The catalogue of agent errors. Codes are stable: callers, logs and metrics match on `code`.
 * docs/errors.md lists every code (a test keeps the two in step).
 */
export const AGT_ERRORS = {
  AGT_ERR_CONFIG: 'invalid configuration',
  AGT_ERR_CONFIG_FILE: 'configuration file unreadable',
  AGT_ERR_NOT_IMPLEMENTED: 'not implemented yet',
  AGT_ERR_SOURCE_UNAVAILABLE: 'event source unavailable',
  AGT_ERR_PRIVILEGES: 'live probes need more privileges',
  AGT_ERR_KERNEL_TOO_OLD: 'kernel too old',
  AGT_ERR_SOURCE: 'event source failed',
  AGT_ERR_EXPORT: 'export transport failure',
  AGT_ERR_TLS: 'TLS setup failed',
  AGT_ERR_SPOOL: 'spool failure',
  AGT_ERR_PROFILE: 'profile refused by the encoder',
  AGT_ERR_METRICS_LISTEN: 'cannot listen for /metrics',
  AGT_ERR_CLOSED: 'closed',
  // --- pcap replay source (agent/pcap/) ---
  AGT_ERR_PCAP_OPEN: 'capture file unreadable',
  AGT_ERR_PCAP_FORMAT: 'not a pcap or pcapng capture, or a malformed one',
  AGT_ERR_PCAP_TRUNCATED: 'capture file ends in the middle of a record',
  AGT_ERR_PCAP_LINKTYPE: 'capture link type not supported',
  // --- end pcap replay source ---
  // --- events replay and --record (agent/event-file.ts) ---
  AGT_ERR_EVENTS_OPEN: 'events file unreadable',
  AGT_ERR_EVENTS_FORMAT: 'not a kpiflow events file, or a garbled one',
  AGT_ERR_EVENTS_TRUNCATED: 'events file ends in the middle of a record',
  AGT_ERR_EVENTS_VERSION: 'events file from a newer kpiflow',
  AGT_ERR_EVENTS_LAYOUT: 'events file recorded with another event layout',
  AGT_ERR_RECORD: 'cannot write the event recording',
  // --- end events replay ---
} as const;

/** A stable agent error code. */
export type AgentErrorCode = keyof typeof AGT_ERRORS;

/** An agent error with a stable code. */
export class AgentError extends Error {
  readonly code: AgentErrorCode;

  constructor(code: AgentErrorCode, detail?: string, options?: { cause?: unknown }) {
    super(detail ? `${AGT_ERRORS[code]}: ${detail}` : AGT_ERRORS[code], options);
    this.name = 'AgentError';
    this.code = code;
  }
}
