/**
 * `kpiflow ipfix dump` as a user runs it: NDJSON per record, templates on request, errors that
 * name the byte offset, exit codes 0/1/2. Expected counts are those SOURCES.md verified with
 * tshark for the fixtures.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { COLLECTOR_FLAGS } from '../../collector/index.js';
import { FIXTURES } from '../helpers/tools.js';

const CLI = fileURLToPath(new URL('../../cli/kpiflow.js', import.meta.url));

function kpiflow(args: string[], input?: Buffer) {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    input,
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, lines: r.stdout.split('\n').filter(Boolean) };
}

describe('kpiflow ipfix dump', () => {
  const flows = `${FIXTURES}ipfix/ipfixcol2/example_flows.ipfix`;

  it('prints one JSON line per data record with element names and message facts', () => {
    const r = kpiflow(['ipfix', 'dump', flows]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.lines.length, 3979);
    const first = JSON.parse(r.lines[0]!) as Record<string, unknown>;
    assert.equal(first['_observationDomainId'], 6);
    assert.equal(typeof first['_templateId'], 'number');
    assert.match(String(first['_exportTime']), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.ok('octetDeltaCount' in first && 'protocolIdentifier' in first, Object.keys(first).join());
    assert.match(r.stderr, /68 messages, 3979 records, 8 templates, 0 errors/);
  });

  it('reads stdin with - and prints templates with --templates', () => {
    const r = kpiflow(['ipfix', 'dump', '-', '--templates'], readFileSync(flows));
    assert.equal(r.code, 0, r.stderr);
    const templates = r.lines.map((l) => JSON.parse(l)).filter((o) => o._kind === 'template');
    assert.equal(templates.length, 8);
    assert.ok(
      templates.every((t) => Array.isArray(t.fields) && t.fields.every((f: { name: string }) => f.name)),
    );
    assert.equal(r.lines.length, 3979 + 8);
  });

  it('names the byte offset of a malformed message and exits 1, keeping good records', () => {
    const good = readFileSync(`${FIXTURES}ipfix/ipfixcol/02-odid0.ipfix`);
    const bad = Buffer.concat([good, Buffer.from('000a0020deadbeef', 'hex')]);
    const r = kpiflow(['ipfix', 'dump', '-'], bad);
    assert.equal(r.code, 1);
    assert.equal(r.lines.length, 121);
    assert.match(r.stderr, new RegExp(`at byte ${good.length}\\).*IPFIX_ERR_TRUNCATED`));
  });

  it('exits 1 with the offset for a file whose header claims more bytes than it has', () => {
    const r = kpiflow(['ipfix', 'dump', `${FIXTURES}ipfix/ipfixcol/bad-length-in-set.ipfix`]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /last message has 1316 of 1384 bytes \(at byte 0\)/);
  });

  it('exits 2 with a clear message on bad usage', () => {
    for (const args of [
      ['ipfix', 'dump'],
      ['ipfix', 'dump', '/no/such/file'],
      ['ipfix', 'frobnicate'],
      ['nope'],
      ['ipfix', 'dump', 'a', '--bogus'],
    ]) {
      const r = kpiflow(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /^kpiflow: /);
    }
    assert.match(kpiflow(['ipfix', 'dump', '/no/such/file']).stderr, /\/no\/such\/file: no such file/);
  });
});

describe('kpiflow demo codec', () => {
  it('encodes profiles, decodes them back and through ipfixDump, and decodes a third-party capture', () => {
    const r = kpiflow(['demo', 'codec']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /decoded back: 306 records, of which 6 RFC 5610 type records/);
    assert.match(r.stdout, /\(65534\/8\)\s+stallCount : 0/, 'ipfixDump names our enterprise element');
    assert.match(r.stdout, /example_flows\.ipfix: 68 messages, 3979 flow records, 0 errors/);
  });
});

describe('kpiflow collect --help', () => {
  it('lists every flag the collector takes', () => {
    const r = kpiflow(['collect', '--help']);
    assert.equal(r.code, 0, r.stderr);
    for (const f of [...Object.keys(COLLECTOR_FLAGS), 'once', 'config'])
      assert.match(r.stdout, new RegExp(`--${f}\\b`), `--${f} in the usage`);
  });
});
