/**
 * The catalogue of collector errors. Codes are stable: callers, logs and metrics match on `code`.
 * docs/errors.md lists every code (a test keeps the two in step).
 */
export const COL_ERRORS = {
  COL_ERR_CONFIG: 'invalid configuration',
  COL_ERR_CONFIG_FILE: 'configuration file unreadable',
  COL_ERR_LISTEN: 'cannot listen',
  COL_ERR_STORE: 'store failure',
  COL_ERR_SCHEMA: 'database schema newer than this collector',
  COL_ERR_TLS: 'TLS setup failed',
  COL_ERR_BAD_QUERY: 'invalid query parameter',
  COL_ERR_INGEST_FILE: 'cannot ingest file',
  COL_ERR_UNAUTHORIZED: 'missing or wrong API bearer token',
  COL_ERR_NOT_FOUND: 'not found',
  COL_ERR_INTERNAL: 'internal error',
} as const;

/** A stable collector error code. */
export type CollectorErrorCode = keyof typeof COL_ERRORS;

/** A collector error with a stable code. */
export class CollectorError extends Error {
  readonly code: CollectorErrorCode;

  constructor(code: CollectorErrorCode, detail?: string, options?: { cause?: unknown }) {
    super(detail ? `${COL_ERRORS[code]}: ${detail}` : COL_ERRORS[code], options);
    this.name = 'CollectorError';
    this.code = code;
  }
}
