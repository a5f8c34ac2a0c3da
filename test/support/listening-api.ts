/**
 * An {@link ApiTest} listening on a loopback port, for clients that speak real HTTP (the typed
 * client over `fetch`). `close()` closes the server, its connections, and the stack.
 */
import type { AddressInfo } from 'node:net';
import { createApiTest, type ApiTest } from './api.js';

export interface ListeningApi extends ApiTest {
  /** `http://127.0.0.1:<port>` */
  url: string;
  port: number;
}

export async function startListeningApi(
  label: string,
  options: Parameters<typeof createApiTest>[1] = {},
): Promise<ListeningApi> {
  const api = await createApiTest(label, options);
  try {
    await api.app.listen({ host: '127.0.0.1', port: 0 });
  } catch (err) {
    await api.close();
    throw err;
  }
  const { port } = api.app.server.address() as AddressInfo;
  return {
    ...api,
    url: `http://127.0.0.1:${port}`,
    port,
    async close() {
      // Keep-alive connections of fetch would hold app.close() for their idle timeout.
      api.app.server.closeAllConnections();
      await api.close();
    },
  };
}
