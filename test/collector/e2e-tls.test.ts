/**
 * IPFIX over TLS with client certificates (--tls-ca): openssl makes a CA, a server certificate
 * and two client certificates in a temp dir, one signed by the CA and one self-signed. An
 * exporter with the CA-signed certificate delivers profiles; exporters without a certificate,
 * with the self-signed one, or speaking plain TCP are refused and nothing of theirs is stored;
 * the collector keeps serving throughout.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { describe, it } from 'node:test';
import tls from 'node:tls';
import { IpfixEncoder } from '../../ipfix/index.js';
import { type CollectorProcess, type HostPort, withCollector } from '../helpers/collector-process.js';
import { type KeyPair, makeSelfSigned, makeTestPki } from '../helpers/pki.js';
import { profileFields } from '../helpers/profile-fields.js';
import { requireTools } from '../helpers/tools.js';

/** The test PKI plus a self-signed client certificate no CA vouches for. */
function makePki(dir: string): ReturnType<typeof makeTestPki> & { rogue: KeyPair } {
  return { ...makeTestPki(dir), rogue: makeSelfSigned(dir, 'rogue', 'kpiflow-agent') };
}

const PROFILE_FIELDS = profileFields(
  4,
  'transferredOctetTotalCount',
  'receivedOctetTotalCount',
  'meanLatencyMicroseconds',
);

/** IPFIX messages with `n` profiles whose flowIds start at `first`. */
function profiles(first: number, n: number): Buffer[] {
  const enc = new IpfixEncoder({ observationDomainId: 7 });
  enc.defineTemplate(47561, PROFILE_FIELDS);
  for (let i = 0; i < n; i++) {
    enc.add(47561, {
      flowId: first + i,
      sourceIPv4Address: '192.0.2.1',
      destinationIPv4Address: '198.51.100.2',
      sourceTransportPort: 40000 + i,
      destinationTransportPort: 443,
      flowStartMilliseconds: 1_760_000_000_000 + i,
      flowEndMilliseconds: 1_760_000_000_100 + i,
      flowStartReason: 1,
      flowEndReason: 2,
      transferredOctetTotalCount: 1000 + i,
      receivedOctetTotalCount: 2000 + i,
      meanLatencyMicroseconds: 15_000 + i,
    });
  }
  return enc.flush();
}

/** How one TLS session went. */
interface TlsSession {
  error: Error | null;
  localPort: number | undefined;
  /** The server's certificate verified against our CA. */
  serverVerified: boolean;
  /** The collector closed the session (we never ended it), within 5 s. */
  closedByPeer: boolean;
}

/**
 * Connects with TLS and sends `messages`. A good exporter ends the session itself; otherwise
 * (`end: false`) the session is left open and only the collector can close it (refusal).
 */
async function tlsExport(
  at: HostPort,
  options: tls.ConnectionOptions,
  messages: Buffer[],
  end = true,
): Promise<TlsSession> {
  return new Promise((resolve) => {
    let error: Error | null = null;
    let localPort: number | undefined;
    let timedOut = false;
    const s = tls.connect({ host: at.host, port: at.port, ...options }, () => {
      localPort = s.localPort;
      for (const m of messages) s.write(m);
      if (end) s.end();
    });
    const timer = setTimeout(() => {
      timedOut = true;
      s.destroy();
    }, 5000);
    s.on('error', (err) => {
      error = err;
    });
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ error, localPort, serverVerified: s.authorized, closedByPeer: !end && !timedOut });
    });
    s.resume();
  });
}

async function tlsExporters(c: CollectorProcess) {
  return (await c.exporters()).filter((e) => e.exporter.startsWith('tls:'));
}

describe('IPFIX over TLS with client certificates', () => {
  it('a CA-signed exporter delivers; no certificate, a self-signed one or plain TCP are refused; the collector keeps serving', async (t) => {
    if (!requireTools(t, 'openssl')) return;
    let pki!: ReturnType<typeof makePki>;
    const tlsArgs = (dir: string) => {
      pki = makePki(dir);
      return [
        '--ipfix-tls',
        '127.0.0.1:0',
        '--tls-cert',
        pki.server.cert,
        '--tls-key',
        pki.server.key,
        '--tls-ca',
        pki.ca.cert,
      ];
    };
    await withCollector({ args: tlsArgs }, async (c) => {
      assert.ok(c.tls, `collector ready has a tls address: ${JSON.stringify(c.logs.at(-1))}`);
      const at = c.tls!;
      const ca = readFileSync(pki.ca.cert);
      const good = { ca, cert: readFileSync(pki.client.cert), key: readFileSync(pki.client.key) };

      const first = await tlsExport(at, good, profiles(1, 50));
      assert.equal(first.error, null, 'CA-signed exporter');
      assert.ok(first.serverVerified, 'the server certificate verifies against the CA');
      const key1 = `tls:127.0.0.1:${first.localPort}`;
      await c.until('the CA-signed exporter stored', async () =>
        (await tlsExporters(c)).some((e) => e.exporter === key1 && e.profiles === 50),
      );
      const { items } = await c.all('/api/v1/profiles', { exporter: key1, order: 'asc' });
      assert.equal(items.length, 50);
      assert.deepEqual(
        items.map((p) => p['flowId']).sort((a, b) => (a as number) - (b as number)),
        Array.from({ length: 50 }, (_, i) => 1 + i),
      );
      const p0 = items.find((p) => p['flowId'] === 1)!;
      assert.equal(p0['sourceAddress'], '192.0.2.1');
      assert.equal(p0['destinationAddress'], '198.51.100.2');
      assert.equal(p0['startState'], 'NEW');
      assert.equal(p0['endState'], 'ESTABLISHED');
      assert.equal(p0['transferredOctetTotalCount'], 1000);
      assert.equal(p0['meanLatencyMicroseconds'], 15_000);

      // Refused: no client certificate, a self-signed one (same subject), plain TCP.
      const none = await tlsExport(at, { ca }, profiles(100, 10), false);
      assert.ok(none.closedByPeer, 'no certificate: the collector closes the session');
      const rogue = await tlsExport(
        at,
        { ca, cert: readFileSync(pki.rogue.cert), key: readFileSync(pki.rogue.key) },
        profiles(200, 10),
        false,
      );
      assert.ok(rogue.closedByPeer, 'self-signed certificate: the collector closes the session');
      const plain = net.connect(at.port, at.host);
      plain.on('error', () => undefined);
      await new Promise<void>((r) => plain.once('connect', r));
      const plainClosed = new Promise<void>((r) => plain.once('close', () => r()));
      for (const m of profiles(300, 10)) plain.write(m);
      await plainClosed;
      await c.until(
        'three refused handshakes logged',
        () => c.logs.filter((l) => l['msg'] === 'TLS handshake refused').length >= 3,
      );
      assert.equal(c.logs.filter((l) => l['msg'] === 'TLS handshake refused').length, 3);
      assert.equal(
        (await c.metrics()).get('kpiflow_collector_tls_handshake_failures_total'),
        3,
        'TLS refusals are counted in /metrics',
      );

      // Still serving: health, and the CA-signed exporter delivers again.
      assert.equal((await c.request('/healthz')).status, 200);
      const second = await tlsExport(at, good, profiles(1000, 20));
      assert.equal(second.error, null);
      const key2 = `tls:127.0.0.1:${second.localPort}`;
      await c.until('the second session stored', async () =>
        (await tlsExporters(c)).some((e) => e.exporter === key2 && e.profiles === 20),
      );
      const exporters = await tlsExporters(c);
      assert.deepEqual(
        exporters.map((e) => e.exporter).sort(),
        [key1, key2].sort(),
        'only the two good sessions',
      );
      const all = await c.all('/api/v1/profiles', {});
      assert.equal(all.items.length, 70, 'nothing from the refused exporters');
      assert.ok(all.items.every((p) => (p['flowId'] as number) < 100 || (p['flowId'] as number) >= 1000));
      const exit = await c.stop('SIGTERM');
      assert.deepEqual(exit, { code: 0, signal: null });
    });
  });
});
