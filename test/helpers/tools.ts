/**
 * Test helpers for third-party tools. A test that needs a tool which is missing is skipped
 * with a loud reason on a developer machine, and fails under CI (CI=true), where `make test`
 * installs every tool first: a skipped test must never pass for a green one there.
 */
import { spawnSync } from 'node:child_process';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';

/** True when running under CI, where nothing may be skipped. */
export const IN_CI = process.env['CI'] === 'true';

/** Absolute path of the shared third-party fixtures folder (../shared/fixtures of the checkout). */
export const FIXTURES = fileURLToPath(new URL('../../../../shared/fixtures/', import.meta.url));

/** True when `name` runs from PATH. */
export function hasTool(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

/**
 * Ensures every tool exists; otherwise skips the test (developer machine) or throws (CI).
 * Returns false when the test was skipped and must return at once.
 */
export function requireTools(t: TestContext, ...names: string[]): boolean {
  const missing = names.filter((n) => !hasTool(n));
  if (missing.length === 0) return true;
  const reason = `SKIPPED: ${missing.join(', ')} not installed (make test installs them)`;
  if (IN_CI) throw new Error(`${reason}; under CI every test must run`);
  process.stderr.write(`\n*** ${t.name}: ${reason} ***\n`);
  t.skip(reason);
  return false;
}

/** Runs a command, returns stdout; throws with stderr when it fails. */
export function run(cmd: string, args: string[], input?: Buffer | string): string {
  const r = spawnSync(cmd, args, { input, maxBuffer: 256 * 1024 * 1024, encoding: 'utf8' });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}
