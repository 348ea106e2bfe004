/**
 * docker-compose.yml and docker/Dockerfile, without a Docker engine: `docker-compose config`
 * accepts the file, and every kpiflow service runs a command line the tests run natively: the
 * collector and the agent run the systemd units' ExecStart (systemd.test.ts starts those from a
 * `make install` tree, the tree the Dockerfile installs), the traffic generator runs
 * docker/traffic.sh with the arguments systemd.test.ts gives it. The mounts hand those command
 * lines the files they name, and Prometheus and Grafana point at the ports the configs set.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parseCollectorArgs } from '../../collector/config.js';
import { requireTools } from '../helpers/tools.js';
import { type Compose, composeConfig, readYaml, volumes } from './compose-file.js';
import { execStart, parseUnit, REPO, serviceValue, type Unit } from './unit-file.js';

const DOCKERFILE = readFileSync(join(REPO, 'docker/Dockerfile'), 'utf8');
const json = (path: string) => JSON.parse(readFileSync(join(REPO, path), 'utf8')) as Record<string, string>;

/** A unit as the Dockerfile's `make install PREFIX=/usr` writes it (bindir /usr/bin, sysconfdir /etc). */
function imageUnit(name: string): Unit {
  const m = /make install DESTDIR=\/out PREFIX=\/usr\b/.exec(DOCKERFILE);
  assert.ok(m, 'the Dockerfile installs with PREFIX=/usr');
  const text = readFileSync(join(REPO, 'packaging/systemd', `${name}.in`), 'utf8')
    .replaceAll('@bindir@', '/usr/bin')
    .replaceAll('@sysconfdir@', '/etc');
  return parseUnit(text);
}

/** The Dockerfile's final ENTRYPOINT. */
function entrypoint(): string[] {
  const all = [...DOCKERFILE.matchAll(/^ENTRYPOINT (\[.*\])$/gm)];
  return JSON.parse(all[all.length - 1]![1]!) as string[];
}

let compose: Compose | null = null;
function config(t: Parameters<typeof requireTools>[0]): Compose | null {
  if (!requireTools(t, 'docker-compose', 'python3')) return null;
  compose ??= composeConfig();
  return compose;
}

describe('docker compose', () => {
  it('docker-compose config accepts docker-compose.yml with the five services', (t) => {
    const c = config(t);
    if (!c) return;
    assert.deepEqual(Object.keys(c.services).sort(), [
      'agent',
      'collector',
      'grafana',
      'prometheus',
      'traffic',
    ]);
    for (const s of ['collector', 'agent', 'traffic']) {
      assert.equal(c.services[s]!.build?.dockerfile, 'docker/Dockerfile', `${s} is built from this checkout`);
      assert.equal(c.services[s]!.network_mode, 'host', `${s} on the host network`);
    }
  });

  it('every file or folder of the checkout that a service mounts exists', (t) => {
    const c = config(t);
    if (!c) return;
    for (const [name, s] of Object.entries(c.services))
      for (const [host] of volumes(s))
        if (host.startsWith(REPO)) assert.ok(existsSync(host), `${name}: ${host}`);
  });

  for (const [service, unitName] of [
    ['collector', 'kpiflow-collector.service'],
    ['agent', 'kpiflow-agent.service'],
  ] as const) {
    it(`the ${service} service runs the ${unitName} ExecStart, with its config and state mounted`, (t) => {
      const c = config(t);
      if (!c) return;
      const s = c.services[service]!;
      const unit = imageUnit(unitName);
      const argv = execStart(unit);
      assert.deepEqual([...entrypoint(), ...(s.command ?? [])], argv);
      assert.equal(s.entrypoint, undefined, 'the image entrypoint is kept');
      const mounts = volumes(s);
      // --config FILE is the repository's example config, read-only.
      const cfg = argv[argv.indexOf('--config') + 1]!;
      const m = mounts.find(([, container]) => container === cfg);
      assert.ok(m, `${cfg} mounted`);
      assert.equal(m[0], join(REPO, 'packaging/config', cfg.split('/').pop()!));
      assert.match(m[2], /\bro\b/);
      // The root file system is read-only; the state directory is a named volume, as StateDirectory=.
      assert.equal(s.read_only, true);
      const state = `/var/lib/${serviceValue(unit, 'StateDirectory')}`;
      const v = mounts.find(([, container]) => container === state);
      assert.ok(v && c.volumes && v[0] in c.volumes, `${state} is a named volume`);
      assert.deepEqual(s.cap_drop, ['ALL']);
    });
  }

  it("the agent service holds exactly the unit's capabilities and the host access the probes use", (t) => {
    const c = config(t);
    if (!c) return;
    const s = c.services['agent']!;
    const caps = serviceValue(imageUnit('kpiflow-agent.service'), 'CapabilityBoundingSet')!
      .split(/\s+/)
      .map((x) => x.replace(/^CAP_/, ''));
    assert.deepEqual([...(s.cap_add ?? [])].sort(), caps.sort());
    assert.equal(s.pid, 'host');
    const mounted = new Set(volumes(s).map(([host, container]) => `${host}:${container}`));
    for (const p of ['/sys/kernel/btf', '/sys/fs/cgroup', '/sys/fs/bpf', '/sys/kernel/tracing', '/run/netns'])
      assert.ok(mounted.has(`${p}:${p}`), `${p} from the host`);
  });

  it('the traffic service runs docker/traffic.sh, as the native test does', (t) => {
    const c = config(t);
    if (!c) return;
    const s = c.services['traffic']!;
    assert.match(DOCKERFILE, /^COPY docker\/traffic\.sh \/usr\/local\/bin\/kpiflow-traffic$/m);
    assert.deepEqual(s.entrypoint, ['sh', '/usr/local/bin/kpiflow-traffic']);
    assert.ok((s.command ?? []).length > 0);
    for (const u of s.command!) assert.match(u, /^http:\/\/127\.0\.0\.1:\d+\//);
  });

  it("Prometheus scrapes the collector's and the agent's /metrics where their configs serve them", (t) => {
    const c = config(t);
    if (!c) return;
    const prom = readYaml('docker/prometheus.yml') as {
      scrape_configs: { job_name: string; static_configs: { targets: string[] }[] }[];
    };
    const targets = (job: string) =>
      prom.scrape_configs.find((j) => j.job_name === job)?.static_configs.flatMap((s) => s.targets);
    assert.deepEqual(targets('kpiflow-collector'), [json('packaging/config/collector.json')['http']]);
    assert.deepEqual(targets('kpiflow-agent'), [json('packaging/config/agent.json')['metrics']]);
    assert.ok(
      volumes(c.services['prometheus']!).some(
        ([host, container]) =>
          host === join(REPO, 'docker/prometheus.yml') && container === '/etc/prometheus/prometheus.yml',
      ),
    );
  });

  it('Grafana gets the provisioning tree, the dashboards folder and the plugin its datasources use', (t) => {
    const c = config(t);
    if (!c) return;
    const g = c.services['grafana']!;
    const m = volumes(g).map(([host, container]) => `${host}:${container}`);
    assert.ok(m.includes(`${join(REPO, 'grafana/provisioning')}:/etc/grafana/provisioning`));
    assert.ok(m.includes(`${join(REPO, 'dashboards')}:/var/lib/grafana/dashboards`));
    const ds = readYaml('grafana/provisioning/datasources/kpiflow.yaml') as {
      datasources: { uid: string; type: string; url: string }[];
    };
    const byUid = new Map(ds.datasources.map((d) => [d.uid, d]));
    assert.equal(byUid.get('kpiflow-api')?.type, 'yesoreyeram-infinity-datasource');
    assert.equal(byUid.get('kpiflow-api')?.url, `http://${json('packaging/config/collector.json')['http']}`);
    assert.equal(byUid.get('kpiflow-prometheus')?.type, 'prometheus');
    assert.ok(g.environment?.['GF_INSTALL_PLUGINS']?.split(',').includes('yesoreyeram-infinity-datasource'));
    const dash = readFileSync(join(REPO, 'grafana/provisioning/dashboards/kpiflow.yaml'), 'utf8');
    assert.match(dash, /path: \/var\/lib\/grafana\/dashboards/);
  });
});

describe('docker compose, ClickHouse variant (docker-compose.clickhouse.yml)', () => {
  it('docker-compose config accepts it over docker-compose.yml; the collector stores into ClickHouse and an API replica reads it', (t) => {
    if (!requireTools(t, 'docker-compose', 'python3')) return;
    const c = composeConfig(['docker-compose.yml', 'docker-compose.clickhouse.yml']);
    assert.deepEqual(Object.keys(c.services).sort(), [
      'agent',
      'api',
      'clickhouse',
      'collector',
      'grafana',
      'prometheus',
      'traffic',
    ]);
    assert.ok('clickhouse-data' in (c.volumes ?? {}), 'ClickHouse keeps its data in a volume');
    // The kpiflow command lines parse with the collector's own option parser (the config file
    // the image holds at /etc/kpiflow is the checkout's packaging/config/collector.json).
    const args = (service: string) =>
      (c.services[service]!.command ?? [])
        .slice(1)
        .map((a) =>
          a === '/etc/kpiflow/collector.json' ? join(REPO, 'packaging/config/collector.json') : a,
        );
    assert.equal(c.services['collector']!.command?.[0], 'collect');
    const collector = parseCollectorArgs(args('collector'));
    assert.equal(collector.store, 'clickhouse');
    assert.equal(collector.clickhouseUrl, 'http://127.0.0.1:8123/kpiflow');
    assert.equal(collector.noIngest, false);
    assert.deepEqual(collector.ipfixUdp, { host: '0.0.0.0', port: 4739 });
    const api = parseCollectorArgs(args('api'));
    assert.equal(api.noIngest, true);
    assert.equal(
      api.clickhouseUrl,
      collector.clickhouseUrl,
      'the replica reads the database the collector writes',
    );
    assert.notEqual(api.http?.port, collector.http?.port, 'the replica answers on a port of its own');
    assert.equal(c.services['api']!.network_mode, 'host');
    assert.deepEqual(c.services['api']!.cap_drop, ['ALL']);
  });
});
