/** `kpiflow collect` options: precedence, validation messages that name the option. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { COLLECTOR_DEFAULTS, parseCollectorArgs } from '../../collector/config.js';

const dir = mkdtempSync(join(tmpdir(), 'kpiflow-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function fails(args: string[], code: string, pattern: RegExp): void {
  assert.throws(
    () => parseCollectorArgs(args),
    (e: unknown) => (e as { code?: string }).code === code && pattern.test((e as Error).message),
    `${args.join(' ')} should fail with ${code} matching ${pattern}`,
  );
}

describe('collector configuration', () => {
  it('defaults to IPFIX on 4739 (UDP, TCP), no TLS without a certificate, and the API on loopback', () => {
    const c = parseCollectorArgs([]);
    assert.deepEqual(c.ipfixUdp, { host: '0.0.0.0', port: 4739 });
    assert.deepEqual(c.ipfixTcp, { host: '0.0.0.0', port: 4739 });
    assert.equal(c.ipfixTls, null);
    assert.equal(c.http?.host, '127.0.0.1');
    assert.equal(c.store, 'sqlite');
    assert.equal(c.retentionMs, COLLECTOR_DEFAULTS.retentionMs);
  });

  it('lets flags override the config file, which overrides the defaults', () => {
    const file = join(dir, 'c.json');
    writeFileSync(
      file,
      JSON.stringify({ ipfixUdp: '127.0.0.1:5000', db: '/tmp/x.db', retention: '7d', batchSize: 100 }),
    );
    const c = parseCollectorArgs([
      '--config',
      file,
      '--db',
      '/tmp/y.db',
      '--ipfix-tcp',
      'off',
      '--http',
      '[::1]:8080',
    ]);
    assert.deepEqual(c.ipfixUdp, { host: '127.0.0.1', port: 5000 });
    assert.equal(c.db, '/tmp/y.db');
    assert.equal(c.ipfixTcp, null);
    assert.deepEqual(c.http, { host: '::1', port: 8080 });
    assert.equal(c.retentionMs, 7 * 86_400_000);
    assert.equal(c.batchSize, 100);
  });

  it('makes an API-only process with --no-ingest: no listeners, ClickHouse options kept', () => {
    const c = parseCollectorArgs([
      '--no-ingest',
      '--store',
      'clickhouse',
      '--clickhouse-url',
      'http://127.0.0.1:8123/kpiflow',
      '--clickhouse-spool',
      '/var/spool/kf',
    ]);
    assert.equal(c.noIngest, true);
    assert.equal(c.ipfixUdp, null);
    assert.equal(c.ipfixTcp, null);
    assert.equal(c.ipfixTls, null);
    assert.equal(c.http?.port, 9739);
    assert.equal(c.clickhouseUrl, 'http://127.0.0.1:8123/kpiflow');
    assert.equal(c.clickhouseSpool, '/var/spool/kf');
    const file = join(dir, 'api.json');
    writeFileSync(file, JSON.stringify({ noIngest: true, db: '/tmp/z.db' }));
    assert.equal(parseCollectorArgs(['--config', file]).noIngest, true);
    assert.equal(parseCollectorArgs([]).noIngest, false);
  });

  it('names the bad option in every error', () => {
    fails(
      ['--no-ingest', '--http', 'off'],
      'COL_ERR_CONFIG',
      /--no-ingest: an API-only process needs --http/,
    );
    fails(['--no-ingest', '--ingest', 'x.ipfix'], 'COL_ERR_CONFIG', /--no-ingest: answers queries only/);
    const badNo = join(dir, 'badno.json');
    writeFileSync(badNo, JSON.stringify({ noIngest: 'yes' }));
    fails(['--config', badNo], 'COL_ERR_CONFIG', /badno\.json: noIngest: expected true or false/);
    fails(['--ipfix-udp', 'nonsense'], 'COL_ERR_CONFIG', /--ipfix-udp: "nonsense" is not HOST:PORT/);
    fails(['--http', 'localhost:99999'], 'COL_ERR_CONFIG', /--http:/);
    fails(['--retention', 'forever'], 'COL_ERR_CONFIG', /--retention: "forever" is not a duration/);
    fails(['--batch-size', '0'], 'COL_ERR_CONFIG', /--batch-size: "0" is not an integer from 1/);
    fails(['--store', 'mysql'], 'COL_ERR_CONFIG', /--store: "mysql" is not sqlite or clickhouse/);
    fails(['--store', 'clickhouse'], 'COL_ERR_CONFIG', /--clickhouse-url/);
    fails(['--tls-cert', 'a.pem'], 'COL_ERR_CONFIG', /--tls-key: TLS needs both/);
    fails(['--tls-ca', 'ca.pem'], 'COL_ERR_CONFIG', /--tls-ca/);
    fails(['--once'], 'COL_ERR_CONFIG', /--once: needs at least one --ingest FILE/);
    fails(['--log-level', 'loud'], 'COL_ERR_CONFIG', /--log-level/);
    fails(['--frobnicate'], 'COL_ERR_CONFIG', /frobnicate/);
    fails(['--config', join(dir, 'missing.json')], 'COL_ERR_CONFIG_FILE', /missing\.json/);
    const badKey = join(dir, 'bad.json');
    writeFileSync(badKey, JSON.stringify({ ipfixUpd: '1.2.3.4:1' }));
    fails(['--config', badKey], 'COL_ERR_CONFIG_FILE', /unknown option "ipfixUpd"/);
    const badValue = join(dir, 'badv.json');
    writeFileSync(badValue, JSON.stringify({ flushInterval: 'soon' }));
    fails(['--config', badValue], 'COL_ERR_CONFIG', /badv\.json: flushInterval: "soon"/);
    const notJson = join(dir, 'x.json');
    writeFileSync(notJson, '{ nope');
    fails(['--config', notJson], 'COL_ERR_CONFIG_FILE', /not valid JSON/);
  });
});
