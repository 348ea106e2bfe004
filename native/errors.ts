/**
 * The catalogue of native-layer errors. Codes are stable: callers match on `code`. The C++ addon
 * constructs NativeError itself (the class is handed to it at init), so an error from libbpf
 * arrives with its errno, libbpf's messages and, for a failed load, the verifier log as lines.
 */
export const NAT_ERRORS = {
  NAT_ERR_BINDING: 'native addon not available',
  NAT_ERR_ARGUMENT: 'invalid argument',
  NAT_ERR_SPEC: 'malformed BPF object file',
  NAT_ERR_OPEN: 'cannot open BPF object',
  NAT_ERR_LOAD: 'BPF object failed to load',
  NAT_ERR_ATTACH: 'BPF program failed to attach',
  NAT_ERR_MAP: 'BPF map operation failed',
  NAT_ERR_RINGBUF: 'ring buffer failure',
  NAT_ERR_ITER: 'BPF iterator failure',
  NAT_ERR_CLOSED: 'closed',
} as const;

/** A stable native-layer error code. */
export type NativeErrorCode = keyof typeof NAT_ERRORS;

/** An error from the native layer (libbpf, the kernel, or the addon's argument checks). */
export class NativeError extends Error {
  readonly code: NativeErrorCode;
  /** errno from the kernel or libbpf (0 when none applies). */
  readonly errno: number;
  /** The verifier's log when a program failed to load, one line per entry. */
  readonly verifierLog: readonly string[];
  /** What libbpf printed (warnings, the failing program's name) during the failed call. */
  readonly libbpfLog: readonly string[];

  constructor(
    code: NativeErrorCode,
    detail?: string,
    errno = 0,
    verifierLog: readonly string[] = [],
    libbpfLog: readonly string[] = [],
  ) {
    super(detail ? `${NAT_ERRORS[code] ?? code}: ${detail}` : (NAT_ERRORS[code] ?? code));
    this.name = 'NativeError';
    this.code = code;
    this.errno = errno;
    this.verifierLog = verifierLog;
    this.libbpfLog = libbpfLog;
  }

  /** The program libbpf names as the one that failed to load, if any. */
  get failedProgram(): string | null {
    for (const line of this.libbpfLog) {
      const m = /prog '([^']+)': (?:BPF program load failed|failed to load|-- BEGIN PROG LOAD LOG)/.exec(
        line,
      );
      if (m) return m[1]!;
    }
    return null;
  }
}
