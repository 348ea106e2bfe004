// Runs the compiled test files under dist/test with node's test runner (Node 20 has no glob support):
//   node scripts/run-tests.mjs [PART ...] [!PART ...]
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

function find(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...find(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

// Arguments select test files by a part of their path; one starting with ! leaves files out.
const args = process.argv.slice(2);
const only = args.filter((a) => !a.startsWith('!'));
const except = args.filter((a) => a.startsWith('!')).map((a) => a.slice(1));
const files = find('dist/test')
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
  .filter((f) => !except.some((o) => f.includes(o)))
  .sort();
if (files.length === 0) {
  console.error('run-tests: no test files found under dist/test (did the build run?)');
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--test', '--test-reporter=spec', ...files], { stdio: 'inherit' });
process.exit(r.status ?? 1);
