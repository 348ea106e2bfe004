/**
 * The collector's HTTP API over a real SQLite store filled through Ingest with messages our
 * encoder produced. Expected answers are computed from the records the test sent.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { buildApi } from '../../collector/api/app.js';
import {
  buildFixture,
  EXPORTER_A,
  EXPORTER_B,
  EXPORTER_C,
  type Fixture,
  FLOW_TEMPLATE,
  flowKey,
  log,
  nearestRank,
  parseCsv,
  rowKey,
  type SentProfile,
  T0,
} from './api-fixture.js';

type Row = Record<string, unknown>;

async function getJson(app: FastifyInstance, url: string): Promise<{ status: number; body: Row }> {
  const r = await app.inject(url);
  return { status: r.statusCode, body: r.json() as Row };
}

/** Every item of a list route, following nextCursor; also the number of pages. */
async function walk(app: FastifyInstance, url: string): Promise<{ items: Row[]; pages: number }> {
  const items: Row[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const sep = url.includes('?') ? '&' : '?';
    const u: string = cursor === null ? url : `${url}${sep}cursor=${encodeURIComponent(cursor)}`;
    const { status, body } = await getJson(app, u);
    assert.equal(status, 200, `${u}: ${JSON.stringify(body)}`);
    items.push(...(body['items'] as Row[]));
    cursor = body['nextCursor'] as string | null;
    pages++;
    assert.ok(pages < 10_000, 'paging does not end');
  } while (cursor !== null);
  return { items, pages };
}

const withoutId = ({ id: _id, ...r }: Row) => r;
const keys = (rows: Row[], key = rowKey) => rows.map(key).sort();

describe('HTTP API over a filled store', () => {
  let fx: Fixture;
  let app: FastifyInstance;
  const byKey = new Map<string, SentProfile>();

  before(async () => {
    fx = await buildFixture();
    for (const p of fx.profiles) byKey.set(p.key, p);
    app = await buildApi({ store: fx.store, ingest: fx.ingest, log });
  });
  after(async () => {
    await app.close();
    await fx.close();
  });

  it('GET /healthz answers ok with the store kind', async () => {
    assert.deepEqual(await getJson(app, '/healthz'), {
      status: 200,
      body: { status: 'ok', store: 'sqlite' },
    });
  });

  it('GET /api/v1/profiles returns every stored profile: IPFIX names, state names, parsed extra, exact 64-bit extras', async () => {
    const { items } = await walk(app, '/api/v1/profiles?limit=1000');
    assert.equal(items.length, fx.profiles.length);
    for (const item of items) {
      const sent = byKey.get(rowKey(item));
      assert.ok(sent, `unexpected profile ${rowKey(item)}`);
      assert.equal(typeof item['id'], 'number');
      assert.deepEqual(withoutId(item), sent.api);
    }
    assert.ok(
      items.some((i) => (i['extra'] as Row | undefined)?.['octetTotalCount'] === '18446744073709551615'),
    );
    assert.ok(!items.some((i) => 'flowStartReason' in i || 'flowEndReason' in i), 'states only by name');
  });

  it('pages walk every profile exactly once, in (flowStartMilliseconds, id) order, at any page size and both orders', async () => {
    const starts = new Set(fx.profiles.map((p) => p.api['flowStartMilliseconds']));
    assert.ok(starts.size < fx.profiles.length, 'the fixture has profiles sharing a start time');
    for (const limit of [1, 7, 100]) {
      for (const order of ['asc', 'desc'] as const) {
        const { items, pages } = await walk(app, `/api/v1/profiles?limit=${limit}&order=${order}`);
        assert.equal(items.length, fx.profiles.length, `limit ${limit} ${order}`);
        assert.equal(new Set(items.map((i) => i['id'])).size, items.length, 'no duplicates');
        assert.equal(pages, Math.ceil(fx.profiles.length / limit));
        for (let i = 1; i < items.length; i++) {
          const a = items[i - 1]!;
          const b = items[i]!;
          const cmp =
            (a['flowStartMilliseconds'] as number) - (b['flowStartMilliseconds'] as number) ||
            (a['id'] as number) - (b['id'] as number);
          assert.ok(order === 'asc' ? cmp < 0 : cmp > 0, `order at ${i} (limit ${limit} ${order})`);
        }
      }
    }
    const first = await getJson(app, '/api/v1/profiles');
    assert.equal((first.body['items'] as Row[]).length, 100, 'default limit');
  });

  it('each profile filter selects exactly the profiles the same filter selects among the sent ones', async () => {
    const t1 = T0 + 300_000;
    const t2 = T0 + 450_000;
    const anyPort = (fx.profiles[5]!.api['sourceTransportPort'] as number).toString();
    const cases: [string, (a: Row) => boolean][] = [
      [`from=${new Date(t1).toISOString()}`, (a) => (a['flowStartMilliseconds'] as number) >= t1],
      [`to=${t2}`, (a) => (a['flowStartMilliseconds'] as number) < t2],
      [
        `from=${t1}&to=${encodeURIComponent('2026-01-01T01:07:30+01:00')}`,
        (a) => (a['flowStartMilliseconds'] as number) >= t1 && (a['flowStartMilliseconds'] as number) < t2,
      ],
      ['from=2026-01-01', () => true],
      ['from=2026-01-02', () => false],
      [
        'address=10.9.0.3',
        (a) => a['sourceAddress'] === '10.9.0.3' || a['destinationAddress'] === '10.9.0.3',
      ],
      ['address=::ffff:10.9.0.3', (a) => a['destinationAddress'] === '10.9.0.3'],
      ['sourceAddress=2001:DB8:0:0:0:0:0:1', (a) => a['sourceAddress'] === '2001:db8::1'],
      ['destinationAddress=2001:db8:0:9:0::2', (a) => a['destinationAddress'] === '2001:db8:0:9::2'],
      ['port=443', (a) => a['destinationTransportPort'] === 443 || a['sourceTransportPort'] === 443],
      [`sourcePort=${anyPort}`, (a) => a['sourceTransportPort'] === Number(anyPort)],
      ['destinationPort=8443', (a) => a['destinationTransportPort'] === 8443],
      [`exporter=${encodeURIComponent(EXPORTER_B)}`, (a) => a['exporter'] === EXPORTER_B],
      ['templateId=47561', () => true],
      ['templateId=256', () => false],
      ['ipVersion=6', (a) => a['ipVersion'] === 6],
      ['ipVersion=4', (a) => a['ipVersion'] === 4],
      ['startState=new', (a) => a['startState'] === 'NEW'],
      ['endState=5', (a) => a['endState'] === 'BROKEN'],
      ['endState=Finished', (a) => a['endState'] === 'FINISHED'],
      [
        `exporter=${encodeURIComponent(EXPORTER_A)}&ipVersion=4&destinationPort=443&endState=UPDATE`,
        (a) =>
          a['exporter'] === EXPORTER_A &&
          a['ipVersion'] === 4 &&
          a['destinationTransportPort'] === 443 &&
          a['endState'] === 'UPDATE',
      ],
    ];
    for (const [query, pred] of cases) {
      const want = fx.profiles.filter((p) => pred(p.api)).map((p) => p.key);
      for (const order of ['asc', 'desc']) {
        const { items } = await walk(app, `/api/v1/profiles?${query}&limit=13&order=${order}`);
        assert.deepEqual(keys(items), want.sort(), `${query} (${order})`);
      }
      if (!['from=2026-01-02', 'templateId=256'].includes(query))
        assert.ok(want.length > 0, `${query} selects some`);
    }
  });

  it('connections/:flowId returns every profile of the connection in time order, 404 when none', async () => {
    const byFlow = new Map<number, SentProfile[]>();
    for (const p of fx.profiles) {
      const id = p.api['flowId'] as number;
      byFlow.set(id, [...(byFlow.get(id) ?? []), p]);
    }
    const multi = [...byFlow.entries()].filter(([, l]) => l.length > 2);
    assert.ok(multi.length > 3);
    for (const [flowId, list] of [...multi.slice(0, 5), ...[...byFlow.entries()].slice(-3)]) {
      const { status, body } = await getJson(app, `/api/v1/connections/${flowId}`);
      assert.equal(status, 200);
      assert.equal(body['flowId'], flowId);
      const want = [...list].sort(
        (a, b) => (a.api['flowStartMilliseconds'] as number) - (b.api['flowStartMilliseconds'] as number),
      );
      assert.deepEqual(
        (body['items'] as Row[]).map(withoutId),
        want.map((p) => p.api),
      );
    }
    const missing = await getJson(app, '/api/v1/connections/999999');
    assert.equal(missing.status, 404);
    assert.equal(missing.body['code'], 'COL_ERR_NOT_FOUND');
  });

  it('profiles/summary counts, sums and percentiles match values computed from the sent profiles', async () => {
    const keyOf: Record<string, (a: Row) => unknown> = {
      destination: (a) => a['destinationAddress'],
      destinationPort: (a) => a['destinationTransportPort'],
      ipVersion: (a) => a['ipVersion'],
      exporter: (a) => a['exporter'],
      endState: (a) => a['endState'],
    };
    const cases: [string, string, number | null, (a: Row) => boolean][] = [
      ['destination', '', null, () => true],
      ['endState', '&bucket=5m', 300_000, () => true],
      ['exporter', '&bucket=60000', 60_000, () => true],
      ['ipVersion', '&bucket=1h', 3_600_000, () => true],
      [
        'destinationPort',
        `&exporter=${encodeURIComponent(EXPORTER_B)}&bucket=90s`,
        90_000,
        (a) => a['exporter'] === EXPORTER_B,
      ],
    ];
    const close = (a: number, b: number) => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b));
    for (const [groupBy, extra, bucketMs, pred] of cases) {
      const { status, body } = await getJson(
        app,
        `/api/v1/profiles/summary?groupBy=${groupBy}&limit=1000${extra}`,
      );
      assert.equal(status, 200, JSON.stringify(body));
      assert.equal(body['groupBy'], groupBy);
      assert.equal(body['bucketMs'], bucketMs);
      const groups = new Map<string, SentProfile[]>();
      for (const p of fx.profiles.filter((x) => pred(x.api))) {
        const t = p.api['flowStartMilliseconds'] as number;
        const k = `${keyOf[groupBy]!(p.api)}|${bucketMs ? Math.floor(t / bucketMs) * bucketMs : null}`;
        groups.set(k, [...(groups.get(k) ?? []), p]);
      }
      const items = body['items'] as Row[];
      assert.equal(items.length, groups.size, groupBy);
      for (let i = 1; i < items.length; i++) {
        assert.ok(
          (items[i - 1]!['profiles'] as number) >= (items[i]!['profiles'] as number),
          'largest first',
        );
      }
      for (const item of items) {
        const list = groups.get(`${item['key']}|${item['bucket']}`);
        assert.ok(list, `group ${item['key']}|${item['bucket']}`);
        const sum = (f: string) => list.reduce((s, p) => s + ((p.api[f] as number) ?? 0), 0);
        assert.equal(item['profiles'], list.length);
        assert.equal(item['connections'], new Set(list.map((p) => p.api['flowId'])).size);
        for (const f of [
          'transferredOctetTotalCount',
          'receivedOctetTotalCount',
          'retransmittedPacketTotalCount',
          'stallCount',
        ]) {
          assert.equal(item[f], sum(f), f);
        }
        const rtts = list.map((p) => p.rtt!);
        const rtt = item['rtt'] as Record<string, number>;
        assert.ok(close(rtt['mean']!, rtts.reduce((s, v) => s + v, 0) / rtts.length), 'rtt mean');
        for (const p of [50, 90, 95, 99]) assert.equal(rtt[`p${p}`], nearestRank(rtts, p), `rtt p${p}`);
        const ttes = list.map((p) => p.api['timeToEstablishMilliseconds'] as number).filter((v) => v > 0);
        if (ttes.length === 0) assert.equal(item['timeToEstablish'], null);
        else {
          const tte = item['timeToEstablish'] as Record<string, number>;
          assert.ok(close(tte['mean']!, ttes.reduce((s, v) => s + v, 0) / ttes.length), 'tte mean');
          assert.equal(tte['p50'], nearestRank(ttes, 50));
          assert.equal(tte['p90'], nearestRank(ttes, 90));
        }
      }
    }
    // limit keeps the largest groups.
    const all = (await getJson(app, '/api/v1/profiles/summary?groupBy=destination&limit=1000')).body[
      'items'
    ] as Row[];
    const top = (await getJson(app, '/api/v1/profiles/summary?groupBy=destination&limit=3')).body[
      'items'
    ] as Row[];
    assert.deepEqual(
      top.map((i) => i['profiles']),
      all.slice(0, 3).map((i) => i['profiles']),
    );
    const dflt = await getJson(app, '/api/v1/profiles/summary');
    assert.equal(dflt.body['groupBy'], 'destination');
  });

  it('GET /api/v1/flows returns the plain flows with their lossless fields, filtered and paged', async () => {
    const { items } = await walk(app, `/api/v1/flows?limit=17&order=asc`);
    assert.equal(items.length, fx.flows.length);
    const sent = new Map(fx.flows.map((f) => [f.key, f]));
    for (const item of items) assert.deepEqual(withoutId(item), sent.get(flowKey(item))?.api);
    assert.ok(items.some((i) => (i['fields'] as Row)['postOctetTotalCount'] === '18446744073709551615'));
    const cases: [string, (a: Row) => boolean][] = [
      ['protocol=17', (a) => a['protocolIdentifier'] === 17],
      ['port=53', (a) => a['destinationTransportPort'] === 53],
      ['address=172.16.1.3', (a) => a['destinationAddress'] === '172.16.1.3'],
      [
        'sourceAddress=172.16.0.2&protocol=6',
        (a) => a['sourceAddress'] === '172.16.0.2' && a['protocolIdentifier'] === 6,
      ],
      [
        `from=${T0 + 200_000}&to=${T0 + 400_000}`,
        (a) => {
          const t = a['flowStartMilliseconds'] as number;
          return t >= T0 + 200_000 && t < T0 + 400_000;
        },
      ],
      [`exporter=${encodeURIComponent(EXPORTER_C)}&templateId=${FLOW_TEMPLATE}&ipVersion=4`, () => true],
      [`exporter=${encodeURIComponent(EXPORTER_A)}`, () => false],
    ];
    for (const [query, pred] of cases) {
      const { items: got } = await walk(app, `/api/v1/flows?${query}&limit=9`);
      assert.deepEqual(
        keys(got, flowKey),
        fx.flows
          .filter((f) => pred(f.api))
          .map((f) => f.key)
          .sort(),
        query,
      );
    }
  });

  it('GET /api/v1/exporters accounts records, lost records from sequence gaps, decode errors and templates', async () => {
    const { status, body } = await getJson(app, '/api/v1/exporters');
    assert.equal(status, 200);
    const items = body['items'] as Row[];
    assert.deepEqual(
      items.map((e) => e['exporter']),
      [EXPORTER_A, EXPORTER_B, EXPORTER_C],
    );
    const [a, b, c] = items as Row[];
    const count = (e: string) => fx.profiles.filter((p) => p.exporter === e).length;
    assert.ok(fx.lostB > 0);
    assert.deepEqual(
      { ...a, firstSeen: 0, lastSeen: 0 },
      {
        exporter: EXPORTER_A,
        transport: 'udp',
        address: '192.0.2.10',
        port: 4739,
        firstSeen: 0,
        lastSeen: 0,
        records: count(EXPORTER_A),
        profiles: count(EXPORTER_A),
        flows: 0,
        lostRecords: 0,
        decodeErrors: 0,
        templateIds: [47561],
      },
    );
    assert.equal(b!['records'], count(EXPORTER_B));
    assert.equal(b!['lostRecords'], fx.lostB);
    assert.equal((b!['records'] as number) + (b!['lostRecords'] as number), fx.sent[EXPORTER_B]);
    assert.equal(c!['flows'], fx.flows.length);
    assert.equal(c!['decodeErrors'], 1);
    assert.deepEqual(c!['templateIds'], [FLOW_TEMPLATE]);
    assert.equal(typeof a!['lastSeen'], 'number');
  });

  it('NDJSON and CSV exports hold the same rows as the JSON pages', async () => {
    for (const [route, query] of [
      ['profiles', ''],
      ['profiles', `exporter=${encodeURIComponent(EXPORTER_A)}&order=asc`],
      ['flows', 'protocol=6'],
    ] as const) {
      const { items } = await walk(app, `/api/v1/${route}?limit=1000&${query}`);
      const nd = await app.inject(`/api/v1/${route}?format=ndjson&${query}`);
      assert.equal(nd.statusCode, 200);
      assert.match(nd.headers['content-type'] as string, /^application\/x-ndjson/);
      assert.equal(nd.trailers['x-next-cursor'], '');
      const lines = nd.body.split('\n');
      assert.equal(lines.pop(), '', 'ends with a newline');
      assert.deepEqual(
        lines.map((l) => JSON.parse(l)),
        items,
      );

      const csv = await app.inject(`/api/v1/${route}?format=csv&${query}`);
      assert.equal(csv.statusCode, 200);
      assert.match(csv.headers['content-type'] as string, /^text\/csv/);
      const [header, ...rows] = parseCsv(csv.body);
      assert.equal(header![0], 'id');
      assert.ok(header!.includes(route === 'profiles' ? 'endState' : 'protocolIdentifier'));
      const parsed = rows.map((cells) => {
        const o: Row = {};
        header!.forEach((col, i) => {
          const v = cells[i]!;
          if (v === '') return;
          if (col === 'extra' || col === 'fields') o[col] = JSON.parse(v);
          else if (/^-?\d+$/.test(v) && Number.isSafeInteger(Number(v))) o[col] = Number(v);
          else o[col] = v;
        });
        return o;
      });
      assert.deepEqual(parsed, items, `${route}?${query}`);
    }
    // Exports start at the cursor given.
    const page = await getJson(app, '/api/v1/profiles?limit=10');
    const rest = await app.inject(
      `/api/v1/profiles?format=ndjson&cursor=${encodeURIComponent(page.body['nextCursor'] as string)}`,
    );
    assert.equal(rest.body.trimEnd().split('\n').length, fx.profiles.length - 10);
  });

  it('bad parameters get 400 COL_ERR_BAD_QUERY naming the parameter', async () => {
    const p = '/api/v1/profiles?';
    const cases: [string, string][] = [
      [`${p}limit=0`, 'limit'],
      [`${p}limit=1001`, 'limit'],
      [`${p}limit=ten`, 'limit'],
      [`${p}limit=1&limit=2`, 'limit'],
      [`${p}order=up`, 'order'],
      [`${p}format=xml`, 'format'],
      [`${p}from=yesterday`, 'from'],
      [`${p}from=2026-01-01T10:00:00`, 'from'],
      [`${p}to=2026-02-30`, 'to'],
      [`${p}to=2026-01-01T24:00:00Z`, 'to'],
      [`${p}from=2026-01-02&to=2026-01-01`, 'from'],
      [`${p}from=99999999999999999`, 'from'],
      [`${p}address=1.2.3`, 'address'],
      [`${p}address=`, 'address'],
      [`${p}sourceAddress=2001:db8::g`, 'sourceAddress'],
      [`${p}destinationAddress=fe80::1%25eth0`, 'destinationAddress'],
      [`${p}port=70000`, 'port'],
      [`${p}port=-1`, 'port'],
      [`${p}sourcePort=x`, 'sourcePort'],
      [`${p}destinationPort=1.5`, 'destinationPort'],
      [`${p}exporter=${'x'.repeat(301)}`, 'exporter'],
      [`${p}templateId=255`, 'templateId'],
      [`${p}ipVersion=5`, 'ipVersion'],
      [`${p}startState=OPEN`, 'startState'],
      [`${p}endState=256`, 'endState'],
      [`${p}cursor=garbage`, 'cursor'],
      [`${p}cursor=${'1'.repeat(101)}`, 'cursor'],
      [`${p}cursor=garbage&format=csv`, 'cursor'],
      [`${p}protocol=6`, 'protocol'],
      ['/api/v1/flows?protocol=300', 'protocol'],
      ['/api/v1/flows?endState=BROKEN', 'endState'],
      ['/api/v1/flows?cursor=1_x', 'cursor'],
      ['/api/v1/profiles/summary?groupBy=source', 'groupBy'],
      ['/api/v1/profiles/summary?bucket=5x', 'bucket'],
      ['/api/v1/profiles/summary?bucket=0', 'bucket'],
      ['/api/v1/profiles/summary?bucket=400d', 'bucket'],
      ['/api/v1/profiles/summary?limit=1001', 'limit'],
      ['/api/v1/profiles/summary?cursor=x', 'cursor'],
      ['/api/v1/connections/abc', 'flowId'],
      ['/api/v1/connections/', 'flowId'],
      ['/api/v1/connections/18446744073709551616', 'flowId'],
      ['/api/v1/exporters?verbose=1', 'verbose'],
    ];
    for (const [url, param] of cases) {
      const { status, body } = await getJson(app, url);
      assert.equal(status, 400, `${url}: ${JSON.stringify(body)}`);
      assert.equal(body['code'], 'COL_ERR_BAD_QUERY', url);
      assert.equal(body['error'], 'Bad Request');
      assert.equal(body['statusCode'], 400);
      assert.match(body['message'] as string, new RegExp(`\\b${param}\\b`), `${url}: ${body['message']}`);
    }
  });

  it('unknown routes get 404 JSON', async () => {
    for (const url of ['/nope', '/api/v1', '/api/v2/profiles', '/api/v1/connections/1/2']) {
      const { status, body } = await getJson(app, url);
      assert.equal(status, 404, url);
      assert.equal(body['code'], 'COL_ERR_NOT_FOUND');
    }
    const post = await app.inject({ method: 'POST', url: '/api/v1/profiles', payload: {} });
    assert.equal(post.statusCode, 404);
  });

  it('never answers 500 to arbitrary query strings', async () => {
    const names = [
      'from',
      'to',
      'address',
      'sourceAddress',
      'destinationAddress',
      'port',
      'sourcePort',
      'destinationPort',
      'exporter',
      'templateId',
      'ipVersion',
      'startState',
      'endState',
      'protocol',
      'limit',
      'cursor',
      'order',
      'format',
      'groupBy',
      'bucket',
      'x',
    ];
    const value = fc.oneof(
      fc.string(),
      fc.integer().map(String),
      fc.bigInt().map(String),
      fc.constantFrom(
        '',
        '0',
        '-1',
        '1e3',
        '2026-01-01',
        'NaN',
        '::',
        'n_1',
        '1_1',
        '5m',
        'ESTABLISHED',
        'csv',
      ),
    );
    const routes = ['/api/v1/profiles', '/api/v1/flows', '/api/v1/profiles/summary', '/api/v1/exporters'];
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...routes),
        fc.array(fc.tuple(fc.constantFrom(...names), value), { maxLength: 4 }),
        fc.string(),
        async (route, params, flowId) => {
          const url =
            params.length === 0 && flowId
              ? `/api/v1/connections/${encodeURIComponent(flowId)}`
              : `${route}?${new URLSearchParams(params)}`;
          const r = await app.inject(url);
          assert.ok(r.statusCode < 500, `${url}: ${r.statusCode} ${r.body.slice(0, 200)}`);
        },
      ),
      { numRuns: 300, seed: 42 },
    );
  });
});

describe('HTTP API exports past the cap', () => {
  it('stop at exportMaxRows; the x-next-cursor trailer resumes without gaps or duplicates', async () => {
    const fx = await buildFixture({ seed: 11 });
    const app = await buildApi({ store: fx.store, log, exportMaxRows: 25 });
    try {
      const seen: Row[] = [];
      let cursor = '';
      let parts = 0;
      do {
        const r = await app.inject(
          `/api/v1/profiles?format=ndjson&order=asc${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
        );
        const lines = r.body.trimEnd().split('\n').filter(Boolean);
        assert.ok(lines.length <= 25);
        seen.push(...lines.map((l) => JSON.parse(l) as Row));
        cursor = r.trailers['x-next-cursor'] as string;
        assert.equal(r.headers['x-export-max-rows'], '25');
        parts++;
      } while (cursor);
      assert.equal(parts, Math.ceil(fx.profiles.length / 25) + (fx.profiles.length % 25 === 0 ? 1 : 0));
      assert.equal(seen.length, fx.profiles.length);
      assert.equal(new Set(seen.map((r) => r['id'])).size, seen.length);
    } finally {
      await app.close();
      await fx.close();
    }
  });
});

describe('HTTP API limits', () => {
  it('returns 64-bit columns beyond 2^53 - 1 exactly', async () => {
    const fx = await buildFixture({ seed: 3 });
    const app = await buildApi({ store: fx.store, log });
    try {
      await fx.store.insert({
        profiles: [
          {
            exporter: 'file:big',
            observationDomainId: 0,
            templateId: 47561,
            receivedMilliseconds: 0,
            extra: null,
            flowId: 1,
            flowStartMilliseconds: 0,
            transferredOctetTotalCount: 2n ** 60n + 1n,
          },
        ],
        flows: [],
        exporters: [],
      });
      const { body } = await getJson(app, '/api/v1/connections/1');
      assert.equal((body['items'] as Row[])[0]!['transferredOctetTotalCount'], '1152921504606846977');
    } finally {
      await app.close();
      await fx.close();
    }
  });
});
