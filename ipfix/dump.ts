/**
 * `kpiflow ipfix dump`: decodes an RFC 5655 byte stream (file or stdin) to NDJSON, one line per
 * data record, with `--templates` one line per template too. Errors go to the caller with the
 * byte offset where they were found; decoding goes on past every error it can survive.
 */
import type { Readable, Writable } from 'node:stream';
import { type DecodeResult, IpfixDecoder } from './decoder.js';
import type { IpfixError } from './errors.js';
import { recordToJson, templateToJson } from './json.js';
import { MessageFramer } from './stream.js';

/** Options of a dump run. */
export interface DumpOptions {
  /** Print template lines (`"_kind":"template"`) as templates arrive. */
  templates?: boolean;
  /** Called for each error as it is found. */
  onError?: (err: IpfixError) => void;
}

/** What a dump run saw. */
export interface DumpSummary {
  messages: number;
  records: number;
  templates: number;
  errors: number;
  /** Data sets whose template never came. */
  droppedSets: number;
  bytes: number;
  /** True when framing was lost or the input ended inside a message. */
  incomplete: boolean;
}

/** Decodes `input` to NDJSON on `output`. Resolves when the input ends. */
export async function dumpIpfix(
  input: Readable,
  output: Writable,
  options: DumpOptions = {},
): Promise<DumpSummary> {
  const decoder = new IpfixDecoder();
  const framer = new MessageFramer();
  const key = 'dump';
  const summary: DumpSummary = {
    messages: 0,
    records: 0,
    templates: 0,
    errors: 0,
    droppedSets: 0,
    bytes: 0,
    incomplete: false,
  };
  const report = (res: DecodeResult) => {
    for (const e of res.errors) {
      summary.errors++;
      options.onError?.(e);
    }
    summary.droppedSets += res.dropped.length;
  };
  let lines: string[] = [];
  const flushLines = async () => {
    if (lines.length === 0) return;
    const text = `${lines.join('\n')}\n`;
    lines = [];
    if (!output.write(text)) await new Promise<void>((resolve) => output.once('drain', resolve));
  };

  for await (const chunk of input) {
    const buf = chunk as Buffer;
    summary.bytes += buf.length;
    for (const m of framer.push(buf)) {
      const res = decoder.decode(key, m.bytes, 'file', m.offset);
      summary.messages++;
      const registry = decoder.sessionRegistry(key);
      for (const ev of res.templates) {
        if (ev.kind !== 'template') continue;
        summary.templates++;
        if (options.templates) {
          ev.template.resolve(registry!);
          lines.push(
            JSON.stringify({
              _kind: 'template',
              _observationDomainId: ev.observationDomainId,
              _offset: m.offset,
              ...templateToJson(ev.template),
            }),
          );
        }
      }
      for (const set of res.dataSets) {
        const prefix = `"_templateId":${set.templateId},"_observationDomainId":${set.observationDomainId},"_exportTime":${JSON.stringify(new Date(set.exportTime * 1000).toISOString())}`;
        for (const r of set.records) lines.push(recordToJson(set.template, r, registry, prefix));
        summary.records += set.records.length;
      }
      report(res);
      if (lines.length >= 512) await flushLines();
    }
    if (framer.error) break;
  }
  const endErr = framer.end();
  if (endErr) {
    summary.incomplete = true;
    summary.errors++;
    options.onError?.(endErr);
  }
  report(decoder.closeSession(key));
  await flushLines();
  return summary;
}
