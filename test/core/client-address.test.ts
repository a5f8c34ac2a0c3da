import { expect } from 'chai';
import { clientAddressKey } from '../../src/core/client-address.js';

describe('core/client-address', () => {
  it('keeps an IPv4 address, and unwraps an IPv4-mapped IPv6 one', () => {
    expect(clientAddressKey('203.0.113.5')).to.equal('203.0.113.5');
    expect(clientAddressKey('::ffff:203.0.113.5')).to.equal('203.0.113.5');
    expect(clientAddressKey('::FFFF:10.0.0.1')).to.equal('10.0.0.1');
  });

  it('groups IPv6 addresses by /64, however they are spelled', () => {
    const key = '2001:db8:1:2::/64';
    for (const ip of [
      '2001:db8:1:2::1',
      '2001:0DB8:0001:0002:ffff:ffff:ffff:ffff',
      '2001:db8:1:2:3:4:5:6',
      '2001:db8:1:2::192.0.2.1',
    ]) {
      expect(clientAddressKey(ip), ip).to.equal(key);
    }
    expect(clientAddressKey('2001:db8:1:3::1')).not.to.equal(key);
    expect(clientAddressKey('2001:db8::1')).to.equal('2001:db8:0:0::/64');
    expect(clientAddressKey('fe80::1%eth0')).to.equal('fe80:0:0:0::/64');
  });

  it('leaves anything else as it is', () => {
    expect(clientAddressKey('unix-socket')).to.equal('unix-socket');
  });
});
