/**
 * Message framing for byte streams: IPFIX over TCP and RFC 5655 files are messages back to back,
 * each starting with version 10 and its own length. Framing is lost when a header is not
 * plausible; the stream cannot be trusted after that and its session must end.
 */

import { HEADER_LENGTH, IPFIX_VERSION } from './decoder.js';
import { IpfixError } from './errors.js';

/** One framed message and its byte offset in the stream. */
export interface FramedMessage {
  offset: number;
  bytes: Buffer;
}

/** Splits a byte stream into IPFIX messages. Feed chunks with `push`; call `end` at the end. */
export class MessageFramer {
  private pending: Buffer = Buffer.alloc(0);
  /** Stream offset of `pending[0]`. */
  private offset = 0;
  private failed: IpfixError | null = null;

  /** The framing error that stopped this stream, if any. */
  get error(): IpfixError | null {
    return this.failed;
  }

  /** Bytes consumed so far. */
  get position(): number {
    return this.offset;
  }

  /** Adds bytes; returns the complete messages they finish. After a framing error, returns nothing. */
  push(chunk: Buffer): FramedMessage[] {
    if (this.failed) return [];
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const out: FramedMessage[] = [];
    let o = 0;
    while (this.pending.length - o >= 4) {
      const version = this.pending.readUInt16BE(o);
      const length = this.pending.readUInt16BE(o + 2);
      if (version !== IPFIX_VERSION || length < HEADER_LENGTH) {
        this.failed = new IpfixError(
          'IPFIX_ERR_FRAMING',
          version !== IPFIX_VERSION
            ? `version ${version} where a message should start`
            : `message length ${length}`,
          this.offset + o,
        );
        break;
      }
      if (this.pending.length - o < length) break;
      out.push({ offset: this.offset + o, bytes: this.pending.subarray(o, o + length) });
      o += length;
    }
    this.offset += o;
    this.pending = this.pending.subarray(o);
    if (this.failed) this.pending = Buffer.alloc(0);
    return out;
  }

  /** Declares the end of the stream; returns IPFIX_ERR_TRUNCATED when it ends inside a message. */
  end(): IpfixError | null {
    if (this.failed) return this.failed;
    if (this.pending.length > 0) {
      const need = this.pending.length >= 4 ? this.pending.readUInt16BE(2) : HEADER_LENGTH;
      this.failed = new IpfixError(
        'IPFIX_ERR_TRUNCATED',
        `last message has ${this.pending.length} of ${need} bytes`,
        this.offset,
      );
      return this.failed;
    }
    return null;
  }
}
