/** The API's own parsers and encoders: query times, addresses, states, buckets, exact JSON, CSV. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { parseAddress, parseBucket, parseState, parseTime } from '../../collector/api/query.js';
import { csvHeader, csvLine, jsonScalar, parseJsonExact } from '../../collector/api/rows.js';
import { parseCsv } from './api-fixture.js';

describe('query parameter parsing', () => {
  it('reads times as ms, ISO dates (UTC) or ISO date-times with a zone', () => {
    const t = Date.UTC(2026, 0, 31, 12, 0, 0);
    for (const [text, ms] of [
      ['1769860800000', t],
      ['0', 0],
      ['2026-01-31', Date.UTC(2026, 0, 31)],
      ['2026-01-31T12:00:00Z', t],
      ['2026-01-31t12:00z', t],
      ['2026-01-31 12:00:00.250Z', t + 250],
      ['2026-01-31T12:00:00.123456789Z', t + 123],
      ['2026-01-31T14:00:00+02:00', t],
      ['2026-01-31T07:30:00-0430', t],
      ['2024-02-29T00:00:00Z', Date.UTC(2024, 1, 29)],
    ] as const) {
      assert.equal(parseTime('from', text), ms, text);
    }
    for (const text of [
      '',
      'now',
      '2026-01-31T12:00:00',
      '2026-13-01',
      '2025-02-29',
      '2026-01-31T12:60:00Z',
      '2026-01-31T12:00:00+24:00',
      '1e12',
      '99999999999999999',
    ]) {
      assert.throws(
        () => parseTime('from', text),
        { code: 'COL_ERR_BAD_QUERY', message: /querystring\/from/ },
        text,
      );
    }
  });

  it('canonicalizes addresses as the store keeps them', () => {
    assert.equal(parseAddress('address', '2001:DB8:0000::0001', true), '2001:db8::1');
    assert.equal(parseAddress('address', '::FFFF:192.0.2.1', true), '192.0.2.1');
    assert.equal(parseAddress('address', '::ffff:192.0.2.1', false), '::ffff:192.0.2.1');
    assert.equal(parseAddress('address', '192.0.2.1', false), '192.0.2.1');
    for (const bad of ['192.0.2', '192.0.2.256', 'host', '::1::2', 'fe80::1%eth0', '']) {
      assert.throws(
        () => parseAddress('sourceAddress', bad, true),
        { message: /querystring\/sourceAddress/ },
        bad,
      );
    }
  });

  it('reads states by name in any case or by number, and bucket widths with units', () => {
    assert.equal(parseState('endState', 'broken'), 5);
    assert.equal(parseState('endState', 'ESTABLISHED'), 2);
    assert.equal(parseState('endState', '200'), 200);
    assert.throws(() => parseState('endState', 'closed'), { message: /endState/ });
    assert.throws(() => parseState('endState', '256'), { message: /endState/ });
    assert.equal(parseBucket('250'), 250);
    assert.equal(parseBucket('250ms'), 250);
    assert.equal(parseBucket('60s'), 60_000);
    assert.equal(parseBucket('5m'), 300_000);
    assert.equal(parseBucket('1h'), 3_600_000);
    assert.equal(parseBucket('366d'), 366 * 86_400_000);
    for (const bad of ['0', '1.5m', '367d', 'm', '5 minutes', '-1s']) {
      assert.throws(() => parseBucket(bad), { message: /bucket/ }, bad);
    }
  });
});

/** JSON text with bigints as bare digits, as the store writes `extra` and `fields`. */
function toStoredJson(v: unknown): string {
  if (typeof v === 'bigint') return v.toString();
  if (Array.isArray(v)) return `[${v.map(toStoredJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    return `{${Object.entries(v)
      .map(([k, x]) => `${JSON.stringify(k)}:${toStoredJson(x)}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

/** What the API should make of it: bigints as numbers when safe, strings otherwise. */
function expected(v: unknown): unknown {
  if (typeof v === 'bigint') return jsonScalar(v);
  if (Array.isArray(v)) return v.map(expected);
  if (v !== null && typeof v === 'object')
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, expected(x)]));
  return v;
}

describe('API row encoding', () => {
  it('parses stored JSON keeping every 64-bit integer exact (property)', () => {
    const leaf = fc.oneof(
      fc.bigInt({ min: -(2n ** 63n), max: 2n ** 64n - 1n }),
      fc.string(),
      fc.stringMatching(/^[0-9]{16,22}$/),
      // Integral doubles past 2^53 print as bare digits too, and read back as strings (documented);
      // -0 prints as 0.
      fc
        .double({ noNaN: true, noDefaultInfinity: true })
        .filter((d) => !Object.is(d, -0) && (!Number.isInteger(d) || Number.isSafeInteger(d))),
      fc.integer(),
      fc.boolean(),
      fc.constant(null),
    );
    const value = fc.letrec((tie) => ({
      node: fc.oneof(
        { depthSize: 'small' },
        leaf,
        fc.array(tie('node')),
        fc.dictionary(fc.string(), tie('node')),
      ),
    })).node;
    fc.assert(
      fc.property(fc.dictionary(fc.string(), value), (obj) => {
        assert.deepEqual(parseJsonExact(toStoredJson(obj)), expected(obj));
      }),
      { numRuns: 500, seed: 7 },
    );
    assert.deepEqual(parseJsonExact('{"a":18446744073709551615,"b":"18446744073709551615","c":1.5e300}'), {
      a: '18446744073709551615',
      b: '18446744073709551615',
      c: 1.5e300,
    });
  });

  it('writes CSV that an RFC 4180 reader reads back (property)', () => {
    const cell = fc.oneof(
      fc.string(),
      fc.integer(),
      fc.constant(null),
      fc.dictionary(fc.string(), fc.string()),
    );
    fc.assert(
      fc.property(fc.array(fc.tuple(cell, cell, cell), { maxLength: 5 }), (rows) => {
        const cols = ['a', 'b', 'c'];
        const text = csvHeader(cols) + rows.map(([a, b, c]) => csvLine(cols, { a, b, c })).join('');
        const parsed = parseCsv(text);
        assert.deepEqual(parsed[0], cols);
        assert.deepEqual(
          parsed.slice(1),
          rows.map((r) =>
            r.map((v) => (v === null ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v))),
          ),
        );
      }),
      { numRuns: 300, seed: 7 },
    );
  });
});
