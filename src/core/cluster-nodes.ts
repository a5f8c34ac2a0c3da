/**
 * The one rule for a Redis Cluster's startup nodes, shared by `REDIS_CLUSTER_NODES`
 * (`host:port,host:port,…`) and the library's `redis` option given as a node list.
 */

/** A node of a Redis Cluster. */
export interface ClusterNode {
  /** A host name or an IP address (IPv6 without brackets). */
  readonly host: string;
  /** The node's client port, 1–65535. */
  readonly port: number;
}

/** The rule, for error messages. */
export const CLUSTER_NODE_RULE = 'host:port (an IPv6 address in brackets: [::1]:7000)';

/**
 * Parses one `host:port`; `undefined` when it is not one. A host is a name or an IPv4 address,
 * or an IPv6 address in brackets; the port is 1–65535.
 */
export function parseClusterNode(text: string): ClusterNode | undefined {
  const match =
    /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)):(\d{1,5})$/.exec(
      text.trim(),
    );
  if (!match) return undefined;
  const port = Number(match[3]);
  if (port < 1 || port > 65535) return undefined;
  return { host: (match[1] ?? match[2])!, port };
}

/**
 * Parses a node list; `problems` names each entry that is not a node (by its position, and its
 * text), and an empty list. Duplicates are kept once.
 */
export function parseClusterNodes(entries: readonly string[]): {
  nodes: ClusterNode[];
  problems: string[];
} {
  const nodes: ClusterNode[] = [];
  const problems: string[] = [];
  const seen = new Set<string>();
  entries.forEach((entry, i) => {
    const node = parseClusterNode(entry);
    if (!node) {
      problems.push(`node ${i + 1} (${JSON.stringify(entry)}) is not ${CLUSTER_NODE_RULE}`);
      return;
    }
    const key = `${node.host}:${node.port}`;
    if (!seen.has(key)) nodes.push(node);
    seen.add(key);
  });
  if (entries.length === 0) problems.push(`no nodes: expected ${CLUSTER_NODE_RULE}, …`);
  return { nodes, problems };
}
