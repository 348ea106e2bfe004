/**
 * IPFIX transports into Ingest: UDP datagrams, TCP and TLS streams (RFC 7011 10), and RFC 5655
 * files. One exporter session per UDP source address and port, per TCP/TLS connection, per file.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createReadStream } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { basename } from 'node:path';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { MessageFramer } from '../ipfix/index.js';
import { CollectorError } from './errors.js';
import type { Ingest } from './ingest.js';

/** A host and port to listen on. */
export interface Endpoint {
  host: string;
  port: number;
}

/** A running listener. */
export interface Listener {
  /** Bound address (port 0 resolved). */
  readonly address: Endpoint;
  /** Stops accepting; resolves when every connection is done and its data handed to Ingest. */
  close(): Promise<void>;
}

/** Counters of transport-level events, for metrics. */
export const transportCounters = {
  tcpConnections: 0,
  tcpFramingErrors: 0,
  tcpIdleTimeouts: 0,
  tlsHandshakeFailures: 0,
  udpDatagrams: 0,
};

function unmapped(a: string | undefined): string | null {
  if (!a) return null;
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}

/** Listens for IPFIX over UDP. `recvBufferBytes` asks the kernel for a large socket buffer. */
export function listenUdp(
  ep: Endpoint,
  ingest: Ingest,
  log: Logger,
  recvBufferBytes = 32 * 1024 * 1024,
): Promise<Listener> {
  const l = log.child({ component: 'udp' });
  return new Promise((resolve, reject) => {
    const sock: UdpSocket = createSocket({ type: ep.host.includes(':') ? 'udp6' : 'udp4', reuseAddr: false });
    sock.once('error', (err) =>
      reject(
        new CollectorError('COL_ERR_LISTEN', `UDP ${ep.host}:${ep.port}: ${err.message}`, { cause: err }),
      ),
    );
    sock.on('message', (msg, rinfo) => {
      transportCounters.udpDatagrams++;
      const address = unmapped(rinfo.address);
      ingest.message(`udp:${address}:${rinfo.port}`, 'udp', msg, { address, port: rinfo.port });
    });
    sock.bind(ep.port, ep.host, () => {
      sock.removeAllListeners('error');
      sock.on('error', (err) => l.error({ err }, 'UDP socket error'));
      try {
        sock.setRecvBufferSize(recvBufferBytes);
      } catch {
        // Capped by net.core.rmem_max; the effective size is logged below.
      }
      const got = sock.getRecvBufferSize();
      if (got < recvBufferBytes) {
        l.warn(
          { requested: recvBufferBytes, effective: got },
          'UDP receive buffer capped by net.core.rmem_max; raise it (sysctl -w net.core.rmem_max=...) to absorb bursts',
        );
      }
      const a = sock.address();
      l.info({ address: a.address, port: a.port }, 'listening for IPFIX over UDP');
      let lastMessage = 0;
      sock.on('message', () => {
        lastMessage = Date.now();
      });
      resolve({
        address: { host: a.address, port: a.port },
        close: async () => {
          // Datagrams already in the socket buffer were sent before the stop: read them until
          // the socket has been quiet for 100 ms, at most 1 s (a steady stream never goes quiet,
          // and what arrives after the stop is not ours to wait for).
          const deadline = Date.now() + 1000;
          while (Date.now() - lastMessage < 100 && Date.now() < deadline)
            await new Promise((r) => setTimeout(r, 20));
          await new Promise<void>((done) => sock.close(() => done()));
        },
      });
    });
  });
}

/** TLS settings: server certificate and key, and a CA that client certificates must chain to. */
export interface TlsOptions {
  cert: Buffer;
  key: Buffer;
  /** When set, exporters must present a certificate signed by this CA; others are refused. */
  ca?: Buffer;
}

/** Listens for IPFIX over TCP, or TLS when `tls` is given. */
export function listenStream(
  ep: Endpoint,
  ingest: Ingest,
  log: Logger,
  options: { tls?: TlsOptions; idleTimeoutMs?: number; maxConnections?: number } = {},
): Promise<Listener> {
  const transport = options.tls ? 'tls' : 'tcp';
  const l = log.child({ component: transport });
  const sockets = new Set<Socket>();
  const closed = new Set<Promise<void>>();
  const onConnection = (socket: Socket | TLSSocket) => {
    transportCounters.tcpConnections++;
    sockets.add(socket);
    const address = unmapped(socket.remoteAddress);
    const port = socket.remotePort ?? null;
    const key = `${transport}:${address}:${port}`;
    const framer = new MessageFramer();
    l.info({ exporter: key }, 'exporter connected');
    let done!: () => void;
    const finished = new Promise<void>((r) => {
      done = r;
    });
    closed.add(finished);
    socket.setTimeout(options.idleTimeoutMs ?? 10 * 60_000);
    socket.on('timeout', () => {
      transportCounters.tcpIdleTimeouts++;
      l.warn({ exporter: key }, 'exporter idle too long, closing');
      socket.destroy();
    });
    socket.on('data', (chunk: Buffer) => {
      for (const m of framer.push(chunk)) ingest.message(key, 'tcp', m.bytes, { address, port }, m.offset);
      if (framer.error) {
        transportCounters.tcpFramingErrors++;
        l.warn(
          { exporter: key, err: framer.error.message, code: framer.error.code },
          'framing lost, closing the session',
        );
        ingest.decoder.stats.errors[framer.error.code]++;
        ingest.counters.decodeErrors[framer.error.code] =
          (ingest.counters.decodeErrors[framer.error.code] ?? 0) + 1;
        ingest.counters.dropped.decode_error++;
        socket.destroy();
      }
    });
    socket.on('error', (err) => l.debug({ exporter: key, err: err.message }, 'exporter socket error'));
    socket.on('close', () => {
      sockets.delete(socket);
      const end = framer.error ? null : framer.end();
      if (end) {
        // The partial message is lost: count it like any decode error.
        l.warn({ exporter: key, err: end.message }, 'exporter closed inside a message');
        ingest.decoder.stats.errors[end.code]++;
        ingest.counters.decodeErrors[end.code] = (ingest.counters.decodeErrors[end.code] ?? 0) + 1;
        ingest.counters.dropped.decode_error++;
      }
      ingest.sessionClosed(key, framer.error ? framer.error.message : 'connection closed');
      l.info({ exporter: key }, 'exporter disconnected');
      closed.delete(finished);
      done();
    });
  };
  let server: Server;
  if (options.tls) {
    server = createTlsServer(
      {
        cert: options.tls.cert,
        key: options.tls.key,
        ca: options.tls.ca,
        requestCert: !!options.tls.ca,
        rejectUnauthorized: !!options.tls.ca,
      },
      onConnection,
    );
    server.on('tlsClientError', (err, socket) => {
      transportCounters.tlsHandshakeFailures++;
      l.warn({ err: err.message, peer: socket.remoteAddress }, 'TLS handshake refused');
    });
  } else server = createServer(onConnection);
  server.maxConnections = options.maxConnections ?? 1024;
  return new Promise((resolve, reject) => {
    server.once('error', (err) =>
      reject(
        new CollectorError(
          'COL_ERR_LISTEN',
          `${transport.toUpperCase()} ${ep.host}:${ep.port}: ${err.message}`,
          { cause: err },
        ),
      ),
    );
    server.listen(ep.port, ep.host, () => {
      server.removeAllListeners('error');
      server.on('error', (err) => l.error({ err }, 'server error'));
      const a = server.address() as { address: string; port: number };
      l.info({ address: a.address, port: a.port }, `listening for IPFIX over ${transport.toUpperCase()}`);
      resolve({
        address: { host: a.address, port: a.port },
        close: async () => {
          server.close(); // stop accepting; its callback would wait for the connections ended below
          // Exporters keep their connection until they close it; on shutdown, end them politely.
          for (const s of sockets) s.end();
          const deadline = new Promise<void>((r) => setTimeout(r, 2000).unref());
          await Promise.race([Promise.all([...closed]), deadline]);
          for (const s of sockets) s.destroy();
        },
      });
    });
  });
}

/** Ingests one RFC 5655 file; resolves with its message count when the whole file is read. */
export async function ingestFile(
  path: string,
  ingest: Ingest,
  log: Logger,
): Promise<{ messages: number; errors: number }> {
  const key = `file:${basename(path)}`;
  const framer = new MessageFramer();
  let messages = 0;
  let errors = 0;
  try {
    for await (const chunk of createReadStream(path)) {
      for (const m of framer.push(chunk as Buffer)) {
        messages++;
        errors += ingest.message(key, 'file', m.bytes, { address: null, port: null }, m.offset).errors.length;
      }
      if (framer.error) break;
    }
  } catch (err) {
    throw new CollectorError('COL_ERR_INGEST_FILE', `${path}: ${(err as Error).message}`, { cause: err });
  }
  const end = framer.end();
  if (end) {
    errors++;
    log.warn({ file: path, err: end.message, code: end.code }, 'file framing error');
  }
  ingest.sessionClosed(key, 'end of file');
  log.info({ file: path, messages, errors }, 'file ingested');
  return { messages, errors };
}
