"""Reading dhclient lease files: the newest lease of an interface and the
server that granted it."""

import calendar
import time

import pytest

from rescue_worker.network import leases

NOW = calendar.timegm((2024, 1, 31, 10, 0, 0))


def block(interface, address, server, expire='4 2024/02/01 10:00:00',
          extra=''):
    return ('lease {\n'
            '  interface "%s";\n'
            '  fixed-address %s;\n'
            '  option subnet-mask 255.255.255.0;\n'
            '  option routers %s;\n'
            '  option dhcp-server-identifier %s;\n'
            '  option host-name "rescue {node}; # not a comment";\n'
            '%s'
            '  renew 3 2024/01/31 10:30:00;\n'
            '  expire %s;\n'
            '}\n' % (interface, address, server, server, extra, expire))


@pytest.fixture
def lease_file(tmp_path):
    path = tmp_path / 'dhclient-eth0.leases'

    def write(*blocks):
        path.write_text('default-duid "\\000\\001";\n' + ''.join(blocks))
        return str(path)
    return write


def test_every_lease_block_is_parsed_in_file_order():
    text = (block('eth0', '198.18.1.100', '198.18.1.1') +
            '# a comment\n' +
            block('eth0', '198.19.1.100', '198.19.1.1',
                  expire='epoch 1706781600; # Thu Feb 1 10:00:00 2024'))

    assert leases.parse(text) == [
        leases.Lease('eth0', '198.18.1.100', '198.18.1.1',
                     calendar.timegm((2024, 2, 1, 10, 0, 0))),
        leases.Lease('eth0', '198.19.1.100', '198.19.1.1', 1706781600.0),
    ]


def test_a_lease_that_never_expires_has_no_expiry():
    [lease] = leases.parse(block('eth0', '198.18.1.100', '198.18.1.1',
                                 expire='never'))

    assert lease.expire is None
    assert not lease.expired(NOW)


def test_dhcpv6_leases_and_unknown_statements_are_ignored():
    text = ('lease6 {\n  interface "eth0";\n  ia-na 1a:2b {\n'
            '    iaaddr 2001:db8::5 { max-life 7200; }\n  }\n}\n' +
            block('eth0', '198.18.1.100', '198.18.1.1',
                  extra='  medium "";\n  vendor-thing { a b; };\n'))

    assert [lease.address for lease in leases.parse(text)] == [
        '198.18.1.100']


def test_the_newest_lease_of_the_interface_is_the_last_one(lease_file):
    path = lease_file(block('eth0', '198.18.1.100', '198.18.1.1'),
                      block('eth1', '198.18.2.100', '198.18.2.1'),
                      block('eth0', '198.19.1.100', '198.19.1.1'),
                      block('eth1', '198.18.2.101', '198.18.2.1'))

    assert leases.newest(path, 'eth0', NOW).server == '198.19.1.1'
    assert leases.newest(path, 'eth1', NOW).address == '198.18.2.101'
    assert leases.newest(path, 'eth2', NOW) is None


def test_an_expired_or_released_newest_lease_is_no_lease(lease_file):
    # dhclient -r records the released lease with its expiry set to now.
    path = lease_file(block('eth0', '198.18.1.100', '198.18.1.1'),
                      block('eth0', '198.18.1.100', '198.18.1.1',
                            expire='3 2024/01/31 10:00:00'))

    assert leases.newest(path, 'eth0', NOW) is None


def test_newest_uses_the_current_time_by_default(lease_file):
    future = time.strftime('%w %Y/%m/%d %H:%M:%S',
                           time.gmtime(time.time() + 3600))
    path = lease_file(block('eth0', '198.18.1.100', '198.18.1.1',
                            expire=future))

    assert leases.newest(path, 'eth0').server == '198.18.1.1'


def test_a_missing_or_empty_file_has_no_lease(tmp_path, lease_file):
    assert leases.read(str(tmp_path / 'nothere')) == []
    assert leases.newest(lease_file(), 'eth0', NOW) is None


def test_a_truncated_file_yields_what_it_has(lease_file):
    text = block('eth0', '198.18.1.100', '198.18.1.1')

    [lease] = leases.parse(text[:-40])

    assert (lease.interface, lease.server) == ('eth0', '198.18.1.1')
    assert lease.expire is None


# -- dhclient -6 -------------------------------------------------------------

LEASE6 = '''\
default-duid "\\000\\001\\000\\0012\\232K\\245Jf\\027\\316\\013\\030";
lease6 {
  interface "%(interface)s";
  ia-na 17:ce:0b:18 {
    starts 1795657511;
    renew 1800;
    rebind 3150;
    iaaddr %(address)s {
      starts 1795657511;
      preferred-life 3600;
      max-life %(life)s;
    }
  }
  option dhcp6.client-id 0:1:0:1:32:9a:4b:a5:4a:66:17:ce:b:18;
  option dhcp6.server-id %(server)s;
  option dhcp6.status-code success "success";
}
'''
STARTS6 = 1795657511


def block6(interface='eth0', address='2001:db8:1::1fc',
           server='0:1:0:1:32:9a:4b:a0:8a:5c:a8:3e:36:d1', life=3600):
    return LEASE6 % {'interface': interface, 'address': address,
                     'server': server, 'life': life}


def test_a_dhcpv6_lease_as_dhclient_6_writes_it():
    [lease] = leases.parse6(block6())

    assert lease == leases.Lease6(
        interface='eth0', addresses=('2001:db8:1::1fc',),
        server='0:1:0:1:32:9a:4b:a0:8a:5c:a8:3e:36:d1',
        expire=STARTS6 + 3600.0)
    # IPv4 blocks only for parse(), IPv6 ones only for parse6().
    assert leases.parse(block6()) == []
    assert leases.parse6(block('eth0', '198.18.1.100', '198.18.1.1')) == []


def test_the_newest_unexpired_dhcpv6_lease_counts(lease_file):
    path = lease_file(block6(server='0:1:old'), block6(interface='eth1'),
                      block6(server='0:1:new'))

    assert leases.newest6(path, 'eth0', STARTS6 + 10).server == '0:1:new'
    assert leases.newest6(path, 'eth0', STARTS6 + 4000) is None
    assert leases.newest6(path, 'eth2', STARTS6) is None


def test_a_released_dhcpv6_lease_is_no_lease(lease_file):
    path = lease_file(block6(), block6(life=0))

    assert leases.newest6(path, 'eth0', STARTS6 + 1) is None
    assert leases.read6(path + '.none') == []


def test_a_statement_without_a_value_is_passed_over():
    text = ('lease {\n  interface "eth0";\n  interface;\n'
            '  fixed-address 198.18.1.100;\n  option dhcp-server-identifier;\n'
            '  expire epoch 1706781600;\n  expire;\n}\n')

    assert leases.parse(text) == [
        leases.Lease('eth0', '198.18.1.100', None, 1706781600.0)]


def test_expire_newest_appends_an_expired_copy_of_the_interfaces_lease(
        lease_file):
    # As dhclient -r records a released lease: dhclient run on the file
    # then discovers, and knows which address its script replaces.
    path = lease_file(block('eth0', '198.18.1.100', '198.18.1.1'),
                      block('eth1', '198.18.2.100', '198.18.2.1'))
    before = open(path).read()

    assert leases.expire_newest(path, 'eth0', NOW) is True

    text = open(path).read()
    assert text.startswith(before)
    copy = block('eth0', '198.18.1.100', '198.18.1.1',
                 expire='3 2024/01/31 10:00:00')
    assert text[len(before):] == copy
    assert leases.newest(path, 'eth0', NOW) is None
    assert leases.newest(path, 'eth1', NOW).server == '198.18.2.1'
    assert leases.read(path)[-1].expire == NOW


def test_expire_newest_without_a_lease_of_the_interface_writes_nothing(
        lease_file, tmp_path):
    path = lease_file(block('eth1', '198.18.2.100', '198.18.2.1'))
    before = open(path).read()

    assert leases.expire_newest(path, 'eth0', NOW) is False
    assert open(path).read() == before
    assert leases.expire_newest(str(tmp_path / 'none'), 'eth0') is False
    assert not (tmp_path / 'none').exists()
