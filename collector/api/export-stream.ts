/**
 * NDJSON and CSV exports: every matching row, read page by page and streamed, up to a cap.
 * The first page is read before anything is sent, so a bad cursor is still a 400. When the cap
 * cuts the export short, the `x-next-cursor` trailer carries the cursor to resume from.
 */
import { Readable } from 'node:stream';
import type { FastifyReply } from 'fastify';
import type { Page } from '../store/types.js';
import { type ApiRow, csvHeader, csvLine } from './rows.js';

/** Default most rows one export returns. */
export const EXPORT_MAX_ROWS = 100_000;
/** Rows read from the store per step of an export. */
export const EXPORT_PAGE_ROWS = 1000;

/** Media types of the export formats. */
export const EXPORT_TYPES = { ndjson: 'application/x-ndjson', csv: 'text/csv; charset=utf-8' } as const;

/** One export. */
export interface ExportOptions<T> {
  format: 'ndjson' | 'csv';
  columns: readonly string[];
  maxRows: number;
  /** Reads one page of at most `limit` rows from `cursor`. */
  read: (limit: number, cursor: string | undefined) => Promise<Page<T>>;
  toApi: (row: T & { id: number }) => ApiRow;
  /** Start position (the request's cursor). */
  cursor: string | undefined;
}

/** Sends an export as a chunked stream. */
export async function sendExport<T>(reply: FastifyReply, opts: ExportOptions<T>): Promise<FastifyReply> {
  const { format, columns, maxRows, read, toApi } = opts;
  const pageRows = () => Math.min(EXPORT_PAGE_ROWS, maxRows - sent);
  let sent = 0;
  let page = await read(pageRows(), opts.cursor);
  // Cursor to resume from when the cap stops the export; empty when everything was sent.
  let resume = '';

  async function* chunks(): AsyncGenerator<string> {
    if (format === 'csv') yield csvHeader(columns);
    for (;;) {
      let text = '';
      for (const row of page.items) {
        const r = toApi(row);
        text += format === 'csv' ? csvLine(columns, r) : `${JSON.stringify(r)}\n`;
      }
      sent += page.items.length;
      if (text) yield text;
      if (!page.nextCursor) return;
      // Page sizes are chosen so the cap falls on a page boundary: its nextCursor resumes exactly.
      if (sent >= maxRows) {
        resume = page.nextCursor;
        return;
      }
      page = await read(pageRows(), page.nextCursor);
    }
  }

  reply.header('content-type', EXPORT_TYPES[format]);
  reply.header('x-export-max-rows', String(maxRows));
  reply.trailer('x-next-cursor', async () => resume);
  return reply.send(Readable.from(chunks(), { objectMode: false }));
}
