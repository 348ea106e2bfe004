/**
 * An API-only process (`kpiflow collect --no-ingest`) on the SQLite store: it opens the database
 * another collector writes, read-only, listens for no IPFIX, answers every query over what the
 * writer stored (new rows included, as they arrive) and keeps answering when the writer stops.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { IpfixEncoder } from '../../ipfix/index.js';
import { CollectorProcess, sendUdp } from '../helpers/collector-process.js';
import { profileEncoder, profileFields } from '../helpers/profile-fields.js';

const FIELDS = profileFields(4, 'meanLatencyMicroseconds');

/** Recent times: the default retention must not delete them. */
const T0 = Date.now() - 3_600_000;

/** A profile encoder (no RFC 5610 type records: every data record is a profile). */
function encoder(): IpfixEncoder {
  return profileEncoder(FIELDS, 3);
}

/** IPFIX messages carrying profiles with flowIds from..to-1. */
function messages(enc: IpfixEncoder, from: number, to: number): Buffer[] {
  for (let i = from; i < to; i++)
    enc.add(47561, {
      flowId: i,
      sourceIPv4Address: '192.0.2.10',
      destinationIPv4Address: i % 2 ? '198.51.100.1' : '198.51.100.2',
      sourceTransportPort: 20000 + i,
      destinationTransportPort: 443,
      flowStartMilliseconds: T0 + i,
      flowEndMilliseconds: T0 + i + 40,
      flowStartReason: 1,
      flowEndReason: 4,
      meanLatencyMicroseconds: 1000 * (1 + (i % 50)),
    });
  return enc.flush();
}

describe('kpiflow collect --no-ingest (SQLite)', () => {
  it('answers over the database another collector writes, sees new rows, listens for no IPFIX', async () => {
    const writer = await CollectorProcess.start({ args: ['--flush-interval', '50ms'] });
    let replica: CollectorProcess | null = null;
    try {
      await sendUdp(writer.udp, messages(encoder(), 0, 300));
      const profiles = async (c: CollectorProcess) =>
        (await c.json<{ items: unknown[] }>('/api/v1/profiles?limit=1000')).items.length;
      await writer.until('300 profiles stored', async () => (await profiles(writer)) === 300);

      replica = await CollectorProcess.start({ dir: writer.dir, db: writer.db, args: ['--no-ingest'] });
      const ready = replica.logs.find((l) => l['msg'] === 'collector ready')!;
      assert.equal(ready['udp'], undefined, 'no UDP listener');
      assert.equal(ready['tcp'], undefined, 'no TCP listener');
      assert.equal(await profiles(replica), 300);
      const summary = await replica.json<{ items: { key: string; profiles: number }[] }>(
        '/api/v1/profiles/summary?groupBy=destination',
      );
      assert.deepEqual(summary.items.map((g) => [g.key, g.profiles]).sort(), [
        ['198.51.100.1', 150],
        ['198.51.100.2', 150],
      ]);
      // Rows the writer stores later show up in the replica's answers.
      // (A second exporter: sendUdp sends from a new socket, so the template goes again.)
      await sendUdp(writer.udp, messages(encoder(), 300, 400));
      await replica.until('the replica sees 400 profiles', async () => (await profiles(replica!)) === 400);
      const exporters = await replica.exporters();
      assert.deepEqual(exporters.map((e) => e.records).sort(), [100, 300]);
      // The writer stops; the replica still answers from the file.
      assert.equal((await writer.stop()).code, 0);
      assert.equal(await profiles(replica), 400);
      assert.equal((await replica.stop()).code, 0);
    } finally {
      await replica?.kill();
      await writer.kill();
    }
  });
});
