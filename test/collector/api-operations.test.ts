/**
 * The API's operational surface: /metrics values against what the fixture sent, the bearer
 * token, the OpenAPI document, and requests over a real socket.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { Gauge } from 'prom-client';
import { buildApi } from '../../collector/api/app.js';
import {
  buildFixture,
  EXPORTER_A,
  EXPORTER_B,
  EXPORTER_C,
  type Fixture,
  log,
  parsePrometheus,
} from './api-fixture.js';

async function withApp(
  options: { apiToken?: string; exportMaxRows?: number; path?: string },
  fn: (app: FastifyInstance, fx: Fixture) => Promise<void>,
): Promise<void> {
  const fx = await buildFixture(options.path ? { path: options.path } : {});
  const app = await buildApi({
    store: fx.store,
    ingest: fx.ingest,
    log,
    ...(options.apiToken ? { apiToken: options.apiToken } : {}),
    ...(options.exportMaxRows ? { exportMaxRows: options.exportMaxRows } : {}),
    extraMetrics: (registry) => {
      new Gauge({ name: 'kpiflow_test_extra', help: 'added by extraMetrics', registers: [registry] }).set(3);
    },
  });
  try {
    await fn(app, fx);
  } finally {
    await app.close();
    await fx.close();
  }
}

describe('GET /metrics', () => {
  it('reports received, stored and dropped records, decode errors, lost records, templates, flushes, size and requests', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kpiflow-api-'));
    try {
      await withApp({ path: join(dir, 'c.db') }, async (app, fx) => {
        for (let i = 0; i < 3; i++)
          assert.equal((await app.inject('/api/v1/profiles?limit=1')).statusCode, 200);
        assert.equal((await app.inject('/api/v1/profiles?limit=0')).statusCode, 400);
        assert.equal((await app.inject('/nope')).statusCode, 404);
        const flushes = fx.ingest.counters.flushes;
        const r = await app.inject('/metrics');
        assert.equal(r.statusCode, 200);
        assert.match(r.headers['content-type'] as string, /^text\/plain; version=0\.0\.4/);
        const m = parsePrometheus(r.body);
        const v = (k: string) => {
          assert.ok(m.has(k), `no series ${k}`);
          return m.get(k);
        };
        const P = 'kpiflow_collector_';
        const delivered = fx.messages[EXPORTER_A]! + fx.messages[EXPORTER_B]! - 3 + fx.messages[EXPORTER_C]!;
        assert.equal(v(`${P}messages_received_total`), delivered);
        assert.equal(v(`${P}records_received_total`), fx.profiles.length + fx.flows.length);
        assert.equal(v(`${P}records_stored_total{kind="profile"}`), fx.profiles.length);
        assert.equal(v(`${P}records_stored_total{kind="flow"}`), fx.flows.length);
        assert.equal(v(`${P}records_dropped_total{reason="decode_error"}`), 1);
        assert.equal(v(`${P}records_dropped_total{reason="no_template"}`), 0);
        assert.equal(v(`${P}records_dropped_total{reason="store_error"}`), 0);
        assert.equal(v(`${P}decode_errors_total{code="IPFIX_ERR_VERSION"}`), 1);
        assert.equal(v(`${P}decode_errors_total{code="IPFIX_ERR_RECORD"}`), 0);
        assert.equal(v(`${P}exporter_lost_records_total{exporter="${EXPORTER_B}"}`), fx.lostB);
        assert.equal(v(`${P}exporter_lost_records_total{exporter="${EXPORTER_A}"}`), 0);
        assert.equal(
          v(`${P}exporter_records_total{exporter="${EXPORTER_A}"}`),
          fx.profiles.filter((p) => p.exporter === EXPORTER_A).length,
        );
        assert.equal(v(`${P}exporter_decode_errors_total{exporter="${EXPORTER_C}"}`), 1);
        for (const e of [EXPORTER_A, EXPORTER_B, EXPORTER_C])
          assert.equal(v(`${P}exporter_templates{exporter="${e}"}`), 1);
        assert.equal(v(`${P}pending_rows`), 0);
        assert.ok(flushes > 1);
        assert.equal(v(`${P}flush_duration_seconds_count`), flushes);
        assert.ok(v(`${P}flush_duration_seconds_sum`)! > 0);
        assert.equal(v(`${P}flush_duration_seconds_bucket{le="+Inf"}`), flushes);
        assert.equal(v(`${P}database_size_bytes`), await fx.store.sizeBytes());
        assert.ok(v(`${P}database_size_bytes`)! > 4096);
        assert.equal(
          v(`${P}http_requests_total{method="GET",route="/api/v1/profiles",status_code="200"}`),
          3,
        );
        assert.equal(
          v(`${P}http_requests_total{method="GET",route="/api/v1/profiles",status_code="400"}`),
          1,
        );
        assert.equal(v(`${P}http_requests_total{method="GET",route="unmatched",status_code="404"}`), 1);
        assert.equal(v('kpiflow_test_extra'), 3);

        // A second scrape does not count the drained flush samples again; later flushes add up.
        await fx.ingest.flush();
        fx.ingest.message(EXPORTER_C, 'udp', Buffer.alloc(20), { address: '192.0.2.30', port: 9995 });
        await fx.ingest.flush();
        const again = parsePrometheus((await app.inject('/metrics')).body);
        assert.equal(again.get(`${P}flush_duration_seconds_count`), fx.ingest.counters.flushes);
        assert.equal(again.get(`${P}decode_errors_total{code="IPFIX_ERR_VERSION"}`), 2);
        assert.equal(again.get(`${P}exporter_decode_errors_total{exporter="${EXPORTER_C}"}`), 2);
        assert.equal(
          again.get(`${P}http_requests_total{method="GET",route="/metrics",status_code="200"}`),
          1,
        );
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('serves store metrics without an ingest (an API over a store alone)', async () => {
    const fx = await buildFixture();
    const app = await buildApi({ store: fx.store, log });
    try {
      const m = parsePrometheus((await app.inject('/metrics')).body);
      assert.equal(
        m.get(`kpiflow_collector_exporter_lost_records_total{exporter="${EXPORTER_B}"}`),
        fx.lostB,
      );
      assert.equal(m.has('kpiflow_collector_records_received_total'), false);
    } finally {
      await app.close();
      await fx.close();
    }
  });
});

describe('bearer token', () => {
  it('protects every route but /healthz; the token compares whole, the scheme in any case', async () => {
    const token = 'sekret-t0ken';
    await withApp({ apiToken: token }, async (app) => {
      assert.equal((await app.inject('/healthz')).statusCode, 200);
      const urls = [
        '/metrics',
        '/docs',
        '/docs/json',
        '/api/v1/profiles',
        '/api/v1/profiles?format=csv',
        '/api/v1/profiles/summary',
        '/api/v1/connections/1000',
        '/api/v1/flows',
        '/api/v1/exporters',
        '/nope',
      ];
      const wrong = [
        undefined,
        '',
        'Bearer',
        'Bearer ',
        `Basic ${Buffer.from(`u:${token}`).toString('base64')}`,
        'Bearer sekret',
        `Bearer ${token}x`,
        `Bearer ${token.toUpperCase()}`,
        `${token}`,
      ];
      for (const url of urls) {
        for (const authorization of wrong) {
          const r = await app.inject({ url, headers: authorization === undefined ? {} : { authorization } });
          assert.equal(r.statusCode, 401, `${url} with ${authorization}`);
          assert.equal(r.json().code, 'COL_ERR_UNAUTHORIZED');
          assert.match(r.headers['www-authenticate'] as string, /^Bearer/);
        }
        for (const authorization of [`Bearer ${token}`, `bearer ${token}`]) {
          const r = await app.inject({ url, headers: { authorization } });
          assert.notEqual(r.statusCode, 401, url);
          assert.ok(r.statusCode < 400 || url === '/nope', `${url}: ${r.statusCode}`);
        }
      }
      const doc = (
        await app.inject({ url: '/docs/json', headers: { authorization: `Bearer ${token}` } })
      ).json();
      assert.deepEqual(doc.security, [{ bearer: [] }]);
      assert.deepEqual(doc.paths['/healthz'].get.security, []);
    });
  });
});

describe('OpenAPI at /docs', () => {
  it('is a valid OpenAPI 3.1 document describing every route with its parameters and replies', async () => {
    await withApp({}, async (app) => {
      const r = await app.inject('/docs/json');
      assert.equal(r.statusCode, 200);
      const doc = r.json();
      assert.equal(doc.openapi, '3.1.0');
      const routes: Record<string, string[]> = {
        '/healthz': [],
        '/metrics': [],
        '/api/v1/profiles': [
          'from',
          'to',
          'address',
          'sourcePort',
          'startState',
          'endState',
          'limit',
          'cursor',
          'order',
          'format',
        ],
        '/api/v1/profiles/summary': ['groupBy', 'bucket', 'limit', 'from', 'endState'],
        '/api/v1/connections/{flowId}': ['flowId'],
        '/api/v1/flows': ['protocol', 'limit', 'cursor', 'format', 'destinationAddress'],
        '/api/v1/exporters': [],
      };
      assert.deepEqual(Object.keys(doc.paths).sort(), Object.keys(routes).sort());
      for (const [path, params] of Object.entries(routes)) {
        const op = doc.paths[path].get;
        assert.ok(op.responses['200'], `${path} 200`);
        assert.ok(op.summary, `${path} summary`);
        const names = (op.parameters ?? []).map((p: { name: string }) => p.name);
        for (const p of params) assert.ok(names.includes(p), `${path} documents ${p}`);
      }
      const list = doc.paths['/api/v1/profiles'].get.responses['200'].content;
      assert.deepEqual(Object.keys(list).sort(), ['application/json', 'application/x-ndjson', 'text/csv']);
      assert.ok(doc.paths['/api/v1/profiles'].get.responses['400']);
      // Every $ref points at a component that exists.
      const refs = JSON.stringify(doc).match(/"\$ref":"[^"]+"/g) ?? [];
      assert.ok(refs.length > 0);
      for (const ref of refs) {
        const name = /#\/components\/schemas\/([^"]+)/.exec(ref)?.[1];
        assert.ok(name && doc.components.schemas[name], ref);
      }
      assert.match(doc.components.schemas.Profile.description, /startState/);

      const ui = await app.inject('/docs');
      const page = ui.statusCode === 302 ? await app.inject(ui.headers.location as string) : ui;
      assert.equal(page.statusCode, 200);
      assert.match(page.headers['content-type'] as string, /text\/html/);
    });
  });

  it('passes openapi-spec-validator', async (t) => {
    const probe = spawnSync('python3', ['-c', 'import openapi_spec_validator'], { encoding: 'utf8' });
    if (probe.status !== 0) {
      t.skip('python3 with openapi-spec-validator is not installed');
      return;
    }
    await withApp({ apiToken: 't' }, async (app) => {
      const dir = mkdtempSync(join(tmpdir(), 'kpiflow-openapi-'));
      try {
        const file = join(dir, 'openapi.json');
        writeFileSync(
          file,
          (await app.inject({ url: '/docs/json', headers: { authorization: 'Bearer t' } })).body,
        );
        const r = spawnSync('python3', ['-m', 'openapi_spec_validator', file], { encoding: 'utf8' });
        assert.equal(r.status, 0, r.stdout + r.stderr);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
});

/** GET over a real socket with node's http client, to read trailers too. */
function httpGet(
  url: string,
  headers: Record<string, string> = {},
): Promise<{
  status: number;
  headers: Record<string, unknown>;
  body: string;
  trailers: Record<string, unknown>;
}> {
  return new Promise((resolve, reject) => {
    get(url, { headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, trailers: res.trailers }),
      );
      res.on('error', reject);
    }).on('error', reject);
  });
}

describe('over a real socket', () => {
  it('answers JSON, streams exports with the resume trailer, and checks the token', async () => {
    const token = 'socket-token';
    await withApp({ apiToken: token, exportMaxRows: 40 }, async (app, fx) => {
      await app.listen({ host: '127.0.0.1', port: 0 });
      const { port } = app.server.address() as { port: number };
      const base = `http://127.0.0.1:${port}`;
      const auth = { authorization: `Bearer ${token}` };

      const health = await fetch(`${base}/healthz`);
      assert.deepEqual(await health.json(), { status: 'ok', store: 'sqlite' });
      assert.equal((await fetch(`${base}/api/v1/exporters`)).status, 401);

      const page = await fetch(`${base}/api/v1/profiles?limit=5&order=asc`, { headers: auth });
      assert.equal(page.status, 200);
      const body = (await page.json()) as { items: unknown[]; nextCursor: string };
      assert.equal(body.items.length, 5);
      assert.equal(typeof body.nextCursor, 'string');

      const ids = new Set<number>();
      let cursor = '';
      do {
        const r = await httpGet(
          `${base}/api/v1/profiles?format=csv&order=asc${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
          auth,
        );
        assert.equal(r.status, 200);
        assert.equal(r.headers['transfer-encoding'], 'chunked');
        const lines = r.body.split('\r\n').filter(Boolean);
        assert.ok(lines[0]!.startsWith('id,exporter,'));
        for (const l of lines.slice(1)) ids.add(Number(l.split(',')[0]));
        assert.ok(lines.length - 1 <= 40);
        cursor = r.trailers['x-next-cursor'] as string;
      } while (cursor);
      assert.equal(ids.size, fx.profiles.length);

      const bad = await fetch(`${base}/api/v1/profiles?limit=5000`, { headers: auth });
      assert.equal(bad.status, 400);
      assert.match(((await bad.json()) as { message: string }).message, /limit/);
    });
  });
});

describe('GET /api/v1/connections/:flowId with 64-bit flowIds', () => {
  it('finds a connection whose flowId is past 2^53 and past 2^63, exactly (the agent hashes flowIds to 63 bits)', async () => {
    await withApp({}, async (app, fx) => {
      const ids = [2n ** 62n + 12_345n, 2n ** 63n + 7n, 2n ** 64n - 1n];
      const near = (id: bigint) => id + 1n; // one apart: a rounding lookup would mix them up
      const profiles = ids.flatMap((id, i) =>
        [id, near(id)].map((flowId, k) => ({
          exporter: 'udp:192.0.2.1:4739',
          observationDomainId: 0,
          templateId: 47561,
          receivedMilliseconds: 1_790_000_000_000 + i,
          flowId,
          flowStartMilliseconds: 1_790_000_000_000 + i * 10 + k,
          extra: null,
        })),
      );
      await fx.store.insert({ profiles, flows: [], exporters: [] });
      for (const id of ids) {
        const r = await app.inject(`/api/v1/connections/${id}`);
        assert.equal(r.statusCode, 200, r.body);
        const body = JSON.parse(r.body) as { flowId: string; items: { flowId: string }[] };
        assert.equal(body.flowId, id.toString());
        assert.deepEqual(
          body.items.map((p) => p.flowId),
          [id.toString()],
        );
      }
    });
  });
});
