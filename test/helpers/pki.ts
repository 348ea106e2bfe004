/**
 * A throw-away PKI made with openssl in a test's temp dir: a CA, a server certificate for
 * 127.0.0.1 and a client certificate, both signed by the CA (EC P-256, valid two days).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from './tools.js';

/** Key and certificate files. */
export interface KeyPair {
  key: string;
  cert: string;
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

const pair = (dir: string, name: string): KeyPair => ({
  key: join(dir, `${name}.key`),
  cert: join(dir, `${name}.crt`),
});

/** A self-signed certificate `name` (a CA, or a client no CA vouches for). Needs openssl on PATH. */
export function makeSelfSigned(dir: string, name: string, cn: string): KeyPair {
  const p = pair(dir, name);
  run('openssl', [
    'req',
    '-x509',
    ...EC,
    '-keyout',
    p.key,
    '-out',
    p.cert,
    '-days',
    '2',
    '-subj',
    `/CN=${cn}`,
  ]);
  return p;
}

/** Makes the CA, server and client files in `dir`. Needs openssl on PATH. */
export function makeTestPki(dir: string): { ca: KeyPair; server: KeyPair; client: KeyPair } {
  const ca = makeSelfSigned(dir, 'ca', 'kpiflow test CA');
  const server = pair(dir, 'server');
  const client = pair(dir, 'client');
  const sign = (who: KeyPair, cn: string, ext: string) => {
    const csr = `${who.cert}.csr`;
    const extFile = `${who.cert}.ext`;
    writeFileSync(extFile, `${ext}\n`);
    run('openssl', ['req', ...EC, '-keyout', who.key, '-out', csr, '-subj', `/CN=${cn}`]);
    run('openssl', [
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      ca.cert,
      '-CAkey',
      ca.key,
      '-CAcreateserial',
      '-out',
      who.cert,
      '-days',
      '2',
      '-extfile',
      extFile,
    ]);
  };
  sign(server, '127.0.0.1', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth');
  sign(client, 'kpiflow-agent', 'extendedKeyUsage=clientAuth');
  return { ca, server, client };
}
