"""Choosing a backend by ``dhcp_backend``, and the ``none`` backend."""

import pytest
from oslo_config import cfg

from rescue_worker import conf as rw_conf
from rescue_worker import payloads
from rescue_worker.network import base
from rescue_worker.network import dhclient
from rescue_worker.network import networkd
from rescue_worker.network import noop
from rescue_worker.network import udhcpc


def make_conf(**overrides):
    conf = cfg.ConfigOpts()
    rw_conf.register_opts(conf)
    for name, value in overrides.items():
        conf.set_override(name, value, group=rw_conf.GROUP)
    return conf


def test_every_choice_of_dhcp_backend_has_a_backend_of_that_name():
    choices = [name for name, _ in rw_conf.DHCP_BACKENDS]

    assert sorted(base.BACKENDS) == sorted(choices)
    for name in choices:
        assert base.backend_class(name).name == name


@pytest.mark.parametrize('name, cls', [
    ('dhclient', dhclient.DhclientBackend),
    ('networkd', networkd.NetworkdBackend),
    ('none', noop.NoopBackend),
    ('udhcpc', udhcpc.UdhcpcBackend)])
def test_get_backend_builds_the_configured_one(tmp_path, name, cls):
    conf = make_conf(dhcp_backend=name, root_dir=str(tmp_path),
                     state_dir=str(tmp_path / 'state'))

    assert type(base.get_backend(conf)) is cls


def test_the_default_backend_is_dhclient():
    assert isinstance(base.get_backend(make_conf()),
                      dhclient.DhclientBackend)


def test_networkd_writes_under_root_dir(tmp_path):
    backend = base.get_backend(make_conf(dhcp_backend='networkd',
                                         root_dir=str(tmp_path)))

    assert backend.network_file('eth0') == str(
        tmp_path / 'etc' / 'systemd' / 'network' / '50-rescue-eth0.network')


def test_an_unknown_backend_name_is_refused():
    with pytest.raises(ValueError) as info:
        base.backend_class('dhcpcd')

    assert 'dhclient, networkd, none' in str(info.value)


def test_the_none_backend_skips_everything_and_never_fails():
    backend = noop.NoopBackend()

    assert backend.passive
    assert backend.configure(['eth0', 'eth1'], 30) == {
        'eth0': 'skipped', 'eth1': 'skipped'}
    assert backend.configure([], 30) == {}
    assert backend.renew('eth0', 30) == 'skipped'
    assert backend.lease_server('eth0') is None
    backend.stop('eth0')
    backend.release('eth0', 30)


def test_only_leased_and_configured_count_as_success():
    assert payloads.DHCP_SUCCESSFUL == {'leased', 'configured'}
    assert set(payloads.DHCP_STATUSES) == {
        'leased', 'configured', 'no_carrier', 'skipped', 'failed'}


def test_the_default_failure_hint_names_interfaces_and_bound():
    assert noop.NoopBackend().failure_hint(['eth0', 'eth1'], 2.5) == \
        'could not configure eth0, eth1 within 2.5 s'
