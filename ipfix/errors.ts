/**
 * The catalogue of IPFIX codec errors. Codes are stable: callers and metrics match on `code`,
 * never on the message text. docs/errors.md lists every code (a test keeps the two in step).
 */
export const IPFIX_ERRORS = {
  IPFIX_ERR_SHORT_MESSAGE: 'message shorter than the 16-byte IPFIX header',
  IPFIX_ERR_VERSION: 'not an IPFIX message (version is not 10)',
  IPFIX_ERR_MESSAGE_LENGTH: 'message length field disagrees with the bytes received',
  IPFIX_ERR_SET_LENGTH: 'set length is shorter than its header or runs past the message end',
  IPFIX_ERR_SET_ID: 'set id is reserved (0, 1, 4-255)',
  IPFIX_ERR_TEMPLATE: 'malformed template record',
  IPFIX_ERR_TEMPLATE_ID: 'template id below 256',
  IPFIX_ERR_TEMPLATE_LIMIT: 'too many templates in one observation domain',
  IPFIX_ERR_DOMAIN_LIMIT: 'too many observation domains in one transport session',
  IPFIX_ERR_SESSION_LIMIT: 'too many transport sessions (exporters)',
  IPFIX_ERR_RECORD: 'data record runs past the end of its set',
  IPFIX_ERR_NO_TEMPLATE: 'data set dropped: its template did not arrive in time',
  IPFIX_ERR_FRAMING: 'stream framing lost',
  IPFIX_ERR_TRUNCATED: 'input ends inside a message',
  IPFIX_ERR_UNKNOWN_ELEMENT: 'information element not in the registry',
  IPFIX_ERR_VALUE: 'value does not fit its field',
  IPFIX_ERR_RECORD_TOO_LARGE: 'record larger than the maximum message size',
  IPFIX_ERR_BAD_TEMPLATE_DEFINITION: 'template definition rejected',
} as const;

/** A stable IPFIX error code. */
export type IpfixErrorCode = keyof typeof IPFIX_ERRORS;

/** An IPFIX codec error: a stable code, a readable message and, for decoding, the byte offset. */
export class IpfixError extends Error {
  readonly code: IpfixErrorCode;
  /** Byte offset in the input (message, stream or file) where the problem was found, when known. */
  readonly offset: number | undefined;

  constructor(code: IpfixErrorCode, detail?: string, offset?: number) {
    const base = IPFIX_ERRORS[code];
    super(`${detail ? `${base}: ${detail}` : base}${offset === undefined ? '' : ` (at byte ${offset})`}`);
    this.name = 'IpfixError';
    this.code = code;
    this.offset = offset;
  }
}
