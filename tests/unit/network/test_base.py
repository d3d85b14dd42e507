"""The ``none`` backend, and what every backend shares.

Choosing a backend by ``dhcp_backend``: ``test_backend_loading.py``."""


from rescue_worker import payloads
from rescue_worker.network import noop


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
