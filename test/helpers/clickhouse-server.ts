/**
 * A real ClickHouse server for tests and benchmarks: Debian's clickhouse-server started from a
 * configuration of its own, listening on loopback ports, with its data in a temporary folder.
 * `stop()` and `start()` keep the folder and the ports (a test can take the server away and
 * bring it back); `destroy()` stops it and removes the folder.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The server binary (Debian package clickhouse-server). */
export const CLICKHOUSE_SERVER = 'clickhouse-server';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

function configXml(dir: string, httpPort: number, tcpPort: number): string {
  return `<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>${dir}/server.log</log><errorlog>${dir}/server.err.log</errorlog><console>0</console></logger>
  <http_port>${httpPort}</http_port>
  <tcp_port>${tcpPort}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>${dir}/data/</path>
  <tmp_path>${dir}/tmp/</tmp_path>
  <format_schema_path>${dir}/format_schemas/</format_schema_path>
  <users_config>${dir}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
</yandex>
`;
}

const USERS_XML = `<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
`;

/** A ClickHouse server of a test. */
export class ClickHouseServer {
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();

  private constructor(
    readonly dir: string,
    readonly httpPort: number,
    readonly tcpPort: number,
  ) {}

  /** Starts a server in a new temporary folder; resolves once it answers /ping. */
  static async start(): Promise<ClickHouseServer> {
    const dir = mkdtempSync(join(tmpdir(), 'kpiflow-ch-'));
    for (const d of ['data', 'tmp', 'format_schemas']) mkdirSync(join(dir, d));
    const s = new ClickHouseServer(dir, await freePort(), await freePort());
    writeFileSync(join(dir, 'config.xml'), configXml(dir, s.httpPort, s.tcpPort));
    writeFileSync(join(dir, 'users.xml'), USERS_XML);
    try {
      await s.start();
    } catch (err) {
      await s.destroy();
      throw err;
    }
    return s;
  }

  /** The HTTP URL of the server with `database` as its path (what --clickhouse-url takes). */
  url(database = 'kpiflow'): string {
    return `http://127.0.0.1:${this.httpPort}/${database}`;
  }

  /** Starts the server again (after stop()); resolves once it answers /ping. */
  async start(): Promise<void> {
    if (this.child) return;
    const child = spawn(CLICKHOUSE_SERVER, [`--config-file=${join(this.dir, 'config.xml')}`], {
      cwd: this.dir,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4000);
    });
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    let gone = false;
    child.once('exit', () => {
      gone = true;
      if (this.child === child) this.child = null;
    });
    child.once('error', () => {
      gone = true;
    });
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (gone) throw new Error(`clickhouse-server exited at start: ${stderr}${this.errorLog()}`);
      try {
        const r = await fetch(`http://127.0.0.1:${this.httpPort}/ping`);
        if (r.ok) return;
      } catch {
        // Not listening yet.
      }
      if (Date.now() > deadline) {
        await this.stop();
        throw new Error(`clickhouse-server did not answer /ping in 30 s: ${this.errorLog()}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Stops the server (SIGTERM, then SIGKILL after 10 s); the data stays. */
  async stop(): Promise<void> {
    const c = this.child;
    if (!c) return;
    c.kill('SIGTERM');
    const t = setTimeout(() => c.kill('SIGKILL'), 10_000);
    await this.exited;
    clearTimeout(t);
    this.child = null;
  }

  /** True while the server process runs. */
  get running(): boolean {
    return this.child !== null;
  }

  /** Runs one SQL statement over HTTP and returns the body (for checks that bypass kpiflow). */
  async query(sql: string): Promise<string> {
    const r = await fetch(`http://127.0.0.1:${this.httpPort}/`, { method: 'POST', body: sql });
    const body = await r.text();
    if (!r.ok) throw new Error(`ClickHouse: ${body.trim()} (query: ${sql})`);
    return body;
  }

  /** Kills the server (its data is thrown away: no need for 18.16's slow clean shutdown) and removes its folder. */
  async destroy(): Promise<void> {
    this.child?.kill('SIGKILL');
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  private errorLog(): string {
    try {
      return readFileSync(join(this.dir, 'server.err.log'), 'utf8').slice(-2000);
    } catch {
      return '';
    }
  }
}
