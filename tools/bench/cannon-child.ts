/**
 * The load generator of the API figures, in a process of its own: autocannon sharing the
 * server's event loop would take CPU from the server it measures (and take more from a server
 * that does more per request). The parent sends one {@link CannonRequest} over IPC; this process
 * fires it, answers one {@link CannonResult}, and exits.
 */
import autocannon from 'autocannon';

/** What to fire. */
export interface CannonRequest {
  url: string;
  path: string;
  connections: number;
  amount: number;
  body: string;
  headers: Record<string, string>;
  /** One `Idempotency-Key` per request, in order (cycled if short); none for the bare route. */
  tokens?: string[];
}

/** What happened. */
export interface CannonResult {
  seconds: number;
  latenciesMs: number[];
  non2xx: number;
  errors: number;
  timeouts: number;
}

async function fire(request: CannonRequest): Promise<CannonResult> {
  const latenciesMs: number[] = [];
  const tokens = request.tokens;
  let next = 0;
  let non2xx = 0;
  const t0 = performance.now();
  // autocannon notices that `amount` is reached on its 1 s tick, so its own duration is rounded
  // up to whole seconds; the clock stops at the last answer instead.
  let last = t0;
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url: request.url,
        connections: request.connections,
        amount: request.amount,
        requests: [
          {
            method: 'POST',
            path: request.path,
            body: request.body,
            headers: { 'content-type': 'application/json', ...request.headers },
            ...(tokens
              ? {
                  setupRequest: (r) => ({
                    ...r,
                    headers: { ...r.headers, 'idempotency-key': tokens[next++ % tokens.length]! },
                  }),
                }
              : {}),
          },
        ],
      },
      (err, res) => (err ? reject(err) : resolve(res)),
    );
    instance.on('response', (_client, statusCode, _bytes, responseTime) => {
      if (statusCode < 200 || statusCode > 299) non2xx++;
      latenciesMs.push(responseTime);
      last = performance.now();
    });
  });
  return {
    seconds: (last - t0) / 1000,
    latenciesMs,
    non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
  };
}

process.once('message', (request: CannonRequest) => {
  fire(request).then(
    (result) => process.send!(result, () => process.exit(0)),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
});
