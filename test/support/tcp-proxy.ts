/**
 * A TCP proxy on loopback in front of a server, for tests of what a client does when an answer
 * is lost: `dropAnswerTo(marker)` makes the next request whose bytes contain `marker` reach the
 * server whole, and then cuts the client's connection (a TCP reset) at the first byte of the
 * server's answer, which the client never sees. Everything else is forwarded as is.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

export interface TcpProxy {
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** Connections the proxy accepted. */
  readonly connections: number;
  /** Requests (chunks from a client) that contained each armed marker, by marker. */
  readonly seen: Readonly<Record<string, number>>;
  /** Answers the proxy dropped. */
  readonly dropped: number;
  /** Drops the answer to the next request containing `marker`. */
  dropAnswerTo(marker: string): void;
  close(): Promise<void>;
}

/** A proxy to `127.0.0.1:<targetPort>`. */
export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  const sockets = new Set<Socket>();
  const armed = new Set<string>();
  const seen: Record<string, number> = {};
  let connections = 0;
  let dropped = 0;

  const server: Server = createServer((client) => {
    connections++;
    const upstream = connect(targetPort, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    client.on('close', () => sockets.delete(client));
    upstream.on('close', () => sockets.delete(upstream));
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    let dropNextAnswer = false;

    client.on('data', (chunk: Buffer) => {
      const text = chunk.toString('latin1');
      for (const marker of [...armed]) {
        if (!text.includes(marker)) continue;
        seen[marker] = (seen[marker] ?? 0) + 1;
        armed.delete(marker);
        dropNextAnswer = true;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (dropNextAnswer) {
        dropped++;
        client.resetAndDestroy();
        upstream.destroy();
        return;
      }
      client.write(chunk);
    });
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    get connections() {
      return connections;
    },
    get dropped() {
      return dropped;
    },
    seen,
    dropAnswerTo(marker) {
      armed.add(marker);
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve, reject) =>
        server.close((err) => (err ? reject(err) : resolve())),
      );
    },
  };
}
