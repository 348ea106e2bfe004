/** RFC 5655 / TCP framing: messages split across chunks, framing loss, truncated input. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MessageFramer } from '../../ipfix/index.js';
import { hex, message } from '../helpers/bytes.js';

describe('MessageFramer', () => {
  const a = message(hex('0100 0008 00000000'));
  const b = message(hex('0101 0004'));

  it('frames messages split at every byte boundary, with their stream offsets', () => {
    const stream = Buffer.concat([a, b, a]);
    for (let cut = 1; cut < stream.length; cut++) {
      const f = new MessageFramer();
      const got = [...f.push(stream.subarray(0, cut)), ...f.push(stream.subarray(cut))];
      assert.deepEqual(
        got.map((m) => [m.offset, m.bytes.length]),
        [
          [0, a.length],
          [a.length, b.length],
          [a.length + b.length, a.length],
        ],
        `cut at ${cut}`,
      );
      assert.equal(f.end(), null);
    }
  });

  it('stops with IPFIX_ERR_FRAMING at the offset of a header that is not IPFIX', () => {
    const f = new MessageFramer();
    const got = f.push(Buffer.concat([a, hex('0009 0020'), b]));
    assert.equal(got.length, 1);
    assert.equal(f.error?.code, 'IPFIX_ERR_FRAMING');
    assert.equal(f.error?.offset, a.length);
    assert.deepEqual(f.push(b), [], 'nothing after framing is lost');
  });

  it('rejects a message length below the header size', () => {
    const f = new MessageFramer();
    f.push(hex('000a 0004 0000 0000'));
    assert.equal(f.error?.code, 'IPFIX_ERR_FRAMING');
  });

  it('reports input that ends inside a message as IPFIX_ERR_TRUNCATED with its offset', () => {
    const f = new MessageFramer();
    f.push(Buffer.concat([a, b.subarray(0, 10)]));
    const err = f.end();
    assert.equal(err?.code, 'IPFIX_ERR_TRUNCATED');
    assert.equal(err?.offset, a.length);
    assert.match(err!.message, /10 of 20 bytes/);
  });
});
