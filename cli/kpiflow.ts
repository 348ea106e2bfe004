#!/usr/bin/env node
/**
 * The `kpiflow` command line. Exit codes: 0 ok, 1 runtime failure, 2 bad usage.
 */
import { createReadStream, existsSync, statSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { CollectorError } from '../collector/index.js';
import { dumpIpfix } from '../ipfix/index.js';
import { runAgent } from './agent.js';
import { runCollect } from './collect.js';
import { runDemo } from './demo.js';

const USAGE = `usage: kpiflow <command> [options]

commands:
  ipfix dump FILE|- [--templates]   decode an IPFIX file (RFC 5655) or stdin to NDJSON
  collect [options]                 receive IPFIX, store it, serve the HTTP API (see README)
  agent [options]                   the agent: live eBPF probes, or replay of events or pcap files (see README)
  demo [options]                    collector, agent and case-study traffic on this machine (demo --help)
  demo codec                        the IPFIX codec end to end
`;

/** Raised for bad usage; exits with code 2. */
class UsageError extends Error {}

async function ipfixDump(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { templates: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    process.stdout.write('usage: kpiflow ipfix dump FILE|- [--templates]\n');
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('ipfix dump: give exactly one FILE, or - for stdin');
  const file = positionals[0]!;
  if (file !== '-') {
    if (!existsSync(file)) throw new UsageError(`ipfix dump: ${file}: no such file`);
    if (statSync(file).isDirectory()) throw new UsageError(`ipfix dump: ${file}: is a directory`);
  }
  const input = file === '-' ? process.stdin : createReadStream(file);
  const name = file === '-' ? 'stdin' : file;
  let malformed = 0;
  const summary = await dumpIpfix(input, process.stdout, {
    templates: values.templates,
    onError: (err) => {
      if (err.code !== 'IPFIX_ERR_NO_TEMPLATE') malformed++;
      process.stderr.write(`kpiflow ipfix dump: ${name}: ${err.message} [${err.code}]\n`);
    },
  });
  process.stderr.write(
    `kpiflow ipfix dump: ${name}: ${summary.messages} messages, ${summary.records} records, ${summary.templates} templates, ${summary.errors} errors${summary.droppedSets ? `, ${summary.droppedSets} data sets without template` : ''}\n`,
  );
  return malformed > 0 || summary.incomplete ? 1 : 0;
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'ipfix': {
      const [sub, ...args] = rest;
      if (sub === 'dump') return ipfixDump(args);
      throw new UsageError(`ipfix: unknown subcommand ${sub ?? '(none)'}; try: kpiflow ipfix dump FILE`);
    }
    case 'demo':
      return runDemo(rest);
    case 'collect':
      return runCollect(rest);
    case 'agent':
      return runAgent(rest);
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE);
      return cmd === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown command ${cmd}`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const usage =
      err instanceof UsageError ||
      (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') ||
      (err instanceof CollectorError &&
        (err.code === 'COL_ERR_CONFIG' || err.code === 'COL_ERR_CONFIG_FILE'));
    if (err instanceof CollectorError && !usage) {
      process.stderr.write(`kpiflow: ${err.message} [${err.code}]\n`);
      process.exitCode = 1;
    } else if (usage) {
      process.stderr.write(`kpiflow: ${(err as Error).message}\n${USAGE}`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`kpiflow: ${(err as Error).stack ?? String(err)}\n`);
      process.exitCode = 1;
    }
  },
);
