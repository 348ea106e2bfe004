/**
 * What the packaging tests need of systemd units and of `make install`: a unit file parsed into
 * its directives, the ExecStart argv expanded as systemd expands it (${STATE_DIRECTORY} is
 * /var/lib/<StateDirectory>), and that argv moved under a staging root (DESTDIR), the way a
 * chroot would see it. Tests start these command lines; they never write their own copy.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The checkout's root (dist/test/packaging is three levels down). */
export const REPO = fileURLToPath(new URL('../../../', import.meta.url));

/** The units `make install` puts in place. */
export const UNITS = ['kpiflow-collector.service', 'kpiflow-agent.service'] as const;

/** A unit file: directive name → values in order (a directive may repeat), per section. */
export type Unit = Map<string, Map<string, string[]>>;

/** Parses a unit file (comments, sections, `Key=value`; no line continuations are used here). */
export function parseUnit(text: string): Unit {
  const unit: Unit = new Map();
  let section: Map<string, string[]> | null = null;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) {
      section = new Map();
      unit.set(s[1]!, section);
      continue;
    }
    const eq = line.indexOf('=');
    if (section === null || eq <= 0) throw new Error(`not a unit file line: ${raw}`);
    const key = line.slice(0, eq);
    section.set(key, [...(section.get(key) ?? []), line.slice(eq + 1)]);
  }
  return unit;
}

/** The single value of `[Service] key`, or null. */
export function serviceValue(unit: Unit, key: string): string | null {
  const v = unit.get('Service')?.get(key);
  return v === undefined ? null : v[v.length - 1]!;
}

/** ExecStart split into words with ${VAR} expanded from the environment systemd gives the unit. */
export function execStart(unit: Unit): string[] {
  const line = serviceValue(unit, 'ExecStart');
  if (line === null) throw new Error('unit has no ExecStart');
  if (/["'\\]/.test(line)) throw new Error(`ExecStart quoting is not handled here: ${line}`);
  const env: Record<string, string> = {};
  const state = serviceValue(unit, 'StateDirectory');
  if (state !== null) env['STATE_DIRECTORY'] = `/var/lib/${state}`;
  return line.split(/\s+/).map((w) =>
    w.replace(/\$\{(\w+)\}/g, (_, name: string) => {
      const v = env[name];
      if (v === undefined) throw new Error(`ExecStart uses \${${name}}, which systemd does not set here`);
      return v;
    }),
  );
}

/** The argv as a process under `root` sees it: absolute paths moved under root. */
export function underRoot(argv: readonly string[], root: string): string[] {
  return argv.map((w) => (w.startsWith('/') ? join(root, w) : w));
}

/**
 * Runs `make install` with these variables; returns its output, throws on failure. `-o build`:
 * the tests install what `make build` built before they ran (the code they test), and several
 * installs at once must not start rebuilding it side by side.
 */
export function makeInstall(vars: Record<string, string>): string {
  const r = spawnSync(
    'make',
    ['-s', '-o', 'build', 'install', ...Object.entries(vars).map(([k, v]) => `${k}=${v}`)],
    {
      cwd: REPO,
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    },
  );
  if (r.status !== 0) throw new Error(`make install exited ${r.status}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** A fresh temporary directory. */
export function tempDir(name: string): string {
  return mkdtempSync(join(tmpdir(), `kpiflow-${name}-`));
}

/** The unit file as the repository ships it (before @bindir@/@sysconfdir@ are substituted). */
export function sourceUnit(name: (typeof UNITS)[number]): Unit {
  return parseUnit(readFileSync(join(REPO, 'packaging/systemd', `${name}.in`), 'utf8'));
}
