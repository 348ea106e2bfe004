/**
 * docker-compose.yml as `docker-compose config` resolves it (extension fields merged, paths made
 * absolute), turned into JSON by python3-yaml (a dependency of Debian's docker-compose).
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO } from './unit-file.js';

/** One service of the resolved compose file (the keys the tests read). */
export interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile: string };
  command?: string[];
  entrypoint?: string[];
  network_mode?: string;
  pid?: string;
  cap_add?: string[];
  cap_drop?: string[];
  read_only?: boolean;
  volumes?: string[];
  environment?: Record<string, string>;
}

/** The resolved compose file. */
export interface Compose {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

/**
 * Runs `docker-compose config` on the repository's compose files (docker-compose.yml, then any
 * override files named); throws with its message when invalid.
 */
export function composeConfig(files: readonly string[] = ['docker-compose.yml']): Compose {
  const args = files.flatMap((f) => ['-f', join(REPO, f)]);
  const r = spawnSync('docker-compose', [...args, 'config'], {
    cwd: REPO,
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`docker-compose config exited ${r.status}: ${r.stderr}`);
  const j = spawnSync(
    'python3',
    ['-c', 'import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'],
    { input: r.stdout, encoding: 'utf8' },
  );
  if (j.status !== 0) throw new Error(`yaml to json failed: ${j.stderr}`);
  return JSON.parse(j.stdout) as Compose;
}

/** A service's volumes as [host, container, options] (named volumes: host is the name). */
export function volumes(s: ComposeService): [string, string, string][] {
  return (s.volumes ?? []).map((v) => {
    const [host = '', container = '', options = ''] = v.split(':');
    return [host, container, options];
  });
}

/** A YAML file of the repository as JSON (python3-yaml). */
export function readYaml(path: string): unknown {
  const j = spawnSync(
    'python3',
    [
      '-c',
      'import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)',
      join(REPO, path),
    ],
    { encoding: 'utf8' },
  );
  if (j.status !== 0) throw new Error(`${path}: ${j.stderr}`);
  return JSON.parse(j.stdout);
}
