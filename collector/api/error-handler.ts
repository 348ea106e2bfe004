/**
 * Every error reply has one shape, {statusCode, error, code, message}: schema validation
 * failures and COL_ERR_BAD_QUERY are 400 naming the parameter, a missing token 401, unknown
 * routes 404, and anything unexpected 500 with the details in the log only.
 */
import { STATUS_CODES } from 'node:http';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { CollectorError, type CollectorErrorCode } from '../errors.js';

/** The body of an error reply. */
export interface ErrorBody {
  statusCode: number;
  error: string;
  code: string;
  message: string;
}

/** An error body for `statusCode`. */
export function errorBody(statusCode: number, code: string, message: string): ErrorBody {
  return { statusCode, error: STATUS_CODES[statusCode] ?? 'Error', code, message };
}

const STATUS: Partial<Record<CollectorErrorCode, number>> = {
  COL_ERR_BAD_QUERY: 400,
  COL_ERR_UNAUTHORIZED: 401,
  COL_ERR_NOT_FOUND: 404,
};

interface AjvError {
  keyword: string;
  instancePath: string;
  message?: string;
  params: Record<string, unknown>;
}

/** A message naming the parameter of the first schema validation error. */
function validationMessage(context: string | undefined, errors: AjvError[]): string {
  const e = errors[0];
  const where = context ?? 'request';
  if (!e) return `${where} is invalid`;
  const path = `${where}${e.instancePath}`;
  switch (e.keyword) {
    case 'additionalProperties':
      return `${where}/${String(e.params['additionalProperty'])} is not a parameter of this route`;
    case 'required':
      return `${where}/${String(e.params['missingProperty'])} is required`;
    case 'enum':
      return `${path} must be one of: ${(e.params['allowedValues'] as unknown[]).join(', ')}`;
    default:
      return `${path} ${e.message ?? 'is invalid'}`;
  }
}

/** The error handler of the API (set on the root, inherited by every route plugin). */
export function handleError(err: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  let body: ErrorBody;
  if (err.validation) {
    body = errorBody(
      400,
      'COL_ERR_BAD_QUERY',
      validationMessage(err.validationContext, err.validation as unknown as AjvError[]),
    );
  } else if (err instanceof CollectorError && STATUS[err.code]) {
    body = errorBody(STATUS[err.code]!, err.code, err.message);
  } else if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
    // fastify's own client errors (bad URL encoding, unsupported media type...): their code stays.
    body = errorBody(err.statusCode, err.code ?? 'COL_ERR_BAD_QUERY', err.message);
  } else {
    request.log.error({ err }, 'request failed');
    body = errorBody(500, 'COL_ERR_INTERNAL', 'internal error; the collector log has the details');
  }
  if (body.statusCode === 401) reply.header('www-authenticate', 'Bearer realm="kpiflow"');
  void reply.code(body.statusCode).send(body);
}

/** Reply of unknown routes. */
export function handleNotFound(request: FastifyRequest, reply: FastifyReply): void {
  const path = request.url.split('?')[0];
  void reply.code(404).send(errorBody(404, 'COL_ERR_NOT_FOUND', `no route ${request.method} ${path}`));
}
