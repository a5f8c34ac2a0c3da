/**
 * The `Authorization` header as sent. Node keeps only the first of several `Authorization`
 * lines in `request.headers` (it drops the repeats of a few singleton headers), so a request
 * with two credentials would be authenticated by whichever came first, while a proxy in front
 * may have read the other. Every line is read from the raw headers instead: two or more come
 * back as a list, which the key check refuses (401) as it refuses any repeated header.
 */
import type { FastifyRequest } from 'fastify';

/** The header's value, or every value when it was sent more than once. */
export function authorizationHeader(request: FastifyRequest): string | string[] | undefined {
  const raw = request.raw.rawHeaders;
  const values: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i]!.toLowerCase() === 'authorization') values.push(raw[i + 1]!);
  }
  return values.length > 1 ? values : request.headers.authorization;
}
