/**
 * Which client a request comes from, for limits kept per client (failed authentications). Pure.
 *
 * An IPv4 address is one client. An IPv6 client usually holds a whole /64 (one host gets a
 * prefix and picks addresses in it freely, RFC 8981 privacy addresses among them), so counting
 * per full IPv6 address would give one host 2^64 fresh counters: IPv6 addresses are grouped by
 * their /64. IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`, what a dual-stack socket reports)
 * are their IPv4 address.
 */
import { isIPv4, isIPv6 } from 'node:net';

/** The key a per-client limit counts under: the IPv4 address, or the IPv6 /64 as `a:b:c:d::/64`. */
export function clientAddressKey(ip: string): string {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(ip);
  if (mapped && isIPv4(mapped[1]!)) return mapped[1]!;
  if (!isIPv6(ip)) return ip;
  const groups = expandIPv6(ip.split('%')[0]!);
  return `${groups.slice(0, 4).join(':')}::/64`;
}

/** The eight 16-bit groups of an IPv6 address, lower-case hex without leading zeros. */
function expandIPv6(ip: string): string[] {
  const [head = '', tail] = ip.toLowerCase().split('::');
  const part = (text: string): string[] => {
    if (text === '') return [];
    const pieces = text.split(':');
    const last = pieces[pieces.length - 1]!;
    // An embedded IPv4 tail (`::1.2.3.4`, `64:ff9b::192.0.2.1`) is the last two groups.
    if (isIPv4(last)) {
      const [a, b, c, d] = last.split('.').map(Number) as [number, number, number, number];
      pieces.splice(-1, 1, ((a << 8) | b).toString(16), ((c << 8) | d).toString(16));
    }
    return pieces.map((p) => Number.parseInt(p, 16).toString(16));
  };
  const left = part(head);
  if (tail === undefined) return left;
  const right = part(tail);
  return [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
}
