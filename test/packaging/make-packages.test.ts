/**
 * `make test` installs every tool a test needs, and only what something uses. The tests name
 * the tools they need in `requireTools(t, ...)` and `hasTool(...)` calls (test/helpers/tools.ts);
 * this file reads those calls from the test sources, and the Debian package list from the
 * Makefile (DEB_PACKAGES), and checks that each tool's package is on the list. Which package
 * ships a tool is not taken on trust from the table below: where the tool is installed, dpkg
 * says which package owns it (under CI, every tool is installed).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { IN_CI } from '../helpers/tools.js';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));

/** The Debian package that ships each tool the tests require. */
const TOOL_PACKAGE: Record<string, string> = {
  bpftool: 'bpftool',
  clang: 'clang',
  'clickhouse-server': 'clickhouse-server',
  curl: 'curl',
  'docker-compose': 'docker-compose',
  ipfixDump: 'libfixbuf-tools',
  mergecap: 'wireshark-common',
  nfcapd: 'nfdump',
  nfdump: 'nfdump',
  nft: 'nftables',
  nsenter: 'util-linux',
  openssl: 'openssl',
  pmacctd: 'pmacct',
  prometheus: 'prometheus',
  python3: 'python3',
  setpriv: 'util-linux',
  softflowctl: 'softflowd',
  softflowd: 'softflowd',
  'systemd-analyze': 'systemd',
  'systemd-nspawn': 'systemd-container',
  tcpdump: 'tcpdump',
  tshark: 'tshark',
  unshare: 'util-linux',
};

/**
 * Packages on the Makefile's list that no `requireTools` names, and what needs them. A package
 * on the list that is in neither table fails the test: `make test` installs only what is used.
 */
const OTHER_USES: Record<string, string> = {
  'python3-ipfix': 'test/ipfix/catalogue.test.ts reads its copy of the IANA registry',
  'libbpf-dev': 'the probes include its headers; the native addon links it',
  'libelf-dev': 'libbpf links libelf',
  'zlib1g-dev': 'libbpf links zlib',
  'pkg-config': 'native/binding.gyp finds libbpf with it',
  'g++': 'node-gyp builds the native addon and better-sqlite3',
  make: 'node-gyp and this Makefile',
  iproute2: 'ip netns and veth pairs for every live test and the demo',
  'clang-format': 'make lint-c',
  iperf3: 'the bulk workload of bench/agent-overhead.ts',
};

/** The packages DEB_PACKAGES holds, read from the Makefile (`:=` and `+=` lines, continued). */
function makefilePackages(): Set<string> {
  const text = readFileSync(join(REPO, 'Makefile'), 'utf8').replace(/\\\n/g, ' ');
  const out = new Set<string>();
  for (const m of text.matchAll(/^DEB_PACKAGES\s*(?::=|\+=)(.*)$/gm))
    for (const p of m[1]!.trim().split(/\s+/)) if (p) out.add(p);
  return out;
}

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sources(p));
    else if (name.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** String or string-array constants of the test sources (`const X = 'a'`, `const X = ['a', 'b']`). */
function constants(files: Map<string, string>): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const text of files.values()) {
    for (const m of text.matchAll(/const (\w+) = '([^']+)';/g)) out.set(m[1]!, [m[2]!]);
    for (const m of text.matchAll(/const (\w+) = \[((?:\s*'[^']+',?)+)\s*\];/g))
      out.set(
        m[1]!,
        [...m[2]!.matchAll(/'([^']+)'/g)].map((x) => x[1]!),
      );
  }
  return out;
}

/** Every tool named by a requireTools or hasTool call of the test sources, with where. */
function requiredTools(): Map<string, string> {
  const dir = join(REPO, 'test');
  const files = new Map(sources(dir).map((f) => [f, readFileSync(f, 'utf8')]));
  const consts = constants(files);
  const tools = new Map<string, string>();
  for (const [file, text] of files) {
    // The definitions themselves, and this file, which names the calls in its comments.
    if (file.endsWith(join('helpers', 'tools.ts')) || file.endsWith('make-packages.test.ts')) continue;
    const where = file.slice(REPO.length);
    const calls = [
      ...[...text.matchAll(/requireTools\(\s*t\s*,([^)]*)\)/g)].map((m) => m[1]!),
      ...[...text.matchAll(/hasTool\(([^)]*)\)/g)].map((m) => m[1]!),
    ];
    for (const args of calls) {
      for (let arg of args.split(',').map((a) => a.trim())) {
        if (!arg) continue;
        const spread = arg.startsWith('...');
        if (spread) arg = arg.slice(3);
        const literal = /^'([^']+)'$/.exec(arg);
        const names = literal ? [literal[1]!] : consts.get(arg);
        assert.ok(names, `${where}: cannot tell which tool ${arg} names (use a literal or a const)`);
        for (const n of names) if (!tools.has(n)) tools.set(n, where);
      }
    }
  }
  return tools;
}

/**
 * The package dpkg says owns each tool (absent: no package installed it). PATH may find another
 * copy first (a pyenv shim for python3), so Debian's own places are asked too; for each place
 * the path itself (python3 is python3-minimal's link) and where it leads. One dpkg call for all.
 */
function owningPackages(tools: string[]): Map<string, string> {
  const candidates = new Map<string, string[]>();
  for (const tool of tools) {
    const which = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' });
    const onPath = which.status === 0 ? [which.stdout.trim()] : [];
    const places = [...onPath, ...['/usr/bin', '/usr/sbin', '/bin', '/sbin'].map((d) => join(d, tool))];
    candidates.set(
      tool,
      places.filter((p) => existsSync(p)).flatMap((p) => [p, realpathSync(p)]),
    );
  }
  const all = [...new Set([...candidates.values()].flat())];
  // dpkg -S exits 1 when some path is no package's; it still lists the owners of the others.
  const r = spawnSync('dpkg', ['-S', ...all], { encoding: 'utf8' });
  const owner = new Map<string, string>();
  for (const line of r.stdout.split('\n')) {
    const m = /^([^\s:,]+)(?::\S+)?: (\/.*)$/.exec(line);
    if (m) owner.set(m[2]!, m[1]!);
  }
  const out = new Map<string, string>();
  for (const [tool, paths] of candidates) {
    const found = paths.map((p) => owner.get(p)).find((o) => o !== undefined);
    if (found) out.set(tool, found);
  }
  return out;
}

/** Direct dependencies of an installed package. */
function depends(pkg: string): string[] {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own ${Field} syntax
  const format = '-f=${Depends}, ${Pre-Depends}';
  const r = spawnSync('dpkg-query', ['-W', format, pkg], { encoding: 'utf8' });
  return r.stdout
    .split(/[,|]/)
    .map((d) => d.trim().split(/[\s:(]/)[0]!)
    .filter(Boolean);
}

describe('the Makefile installs what the tests use', () => {
  const listed = makefilePackages();
  const tools = requiredTools();

  it('reads a package list and a set of required tools (the parsers found something)', () => {
    assert.ok(listed.size >= 20, `${listed.size} packages read from the Makefile`);
    assert.ok(tools.has('tshark') && tools.has('tcpdump'), [...tools.keys()].join(' '));
  });

  it("every tool a test requires is in the table, and its package is on the Makefile's list", () => {
    for (const [tool, where] of tools) {
      const pkg = TOOL_PACKAGE[tool];
      assert.ok(pkg, `${where} requires ${tool}: add it to TOOL_PACKAGE with its Debian package`);
      assert.ok(listed.has(pkg), `${where} requires ${tool}, but DEB_PACKAGES has no ${pkg}`);
    }
  });

  it('the table is true: dpkg says each installed tool belongs to its package (or to one it depends on)', (t) => {
    const missing: string[] = [];
    const owners = owningPackages(Object.keys(TOOL_PACKAGE));
    for (const [tool, pkg] of Object.entries(TOOL_PACKAGE)) {
      const owner = owners.get(tool);
      if (owner === undefined) {
        missing.push(tool);
        continue;
      }
      assert.ok(
        owner === pkg || depends(pkg).includes(owner),
        `${tool} is owned by ${owner}, which neither is ${pkg} nor a dependency of it`,
      );
    }
    if (missing.length > 0) {
      const reason = `${missing.join(', ')} not installed (make test installs them)`;
      if (IN_CI) assert.fail(`${reason}; under CI every tool must be there`);
      t.diagnostic(`not checked: ${reason}`);
    }
  });

  it('every package on the list is used: by a required tool or by a named build or test step', () => {
    const byTools = new Set([...tools.keys()].map((tool) => TOOL_PACKAGE[tool]));
    for (const pkg of listed)
      assert.ok(
        byTools.has(pkg) || OTHER_USES[pkg],
        `DEB_PACKAGES has ${pkg}, which no test requires and OTHER_USES does not explain`,
      );
    for (const pkg of Object.keys(OTHER_USES))
      assert.ok(listed.has(pkg), `OTHER_USES names ${pkg}, not listed`);
  });
});
