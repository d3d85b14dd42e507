"""``[rescue_worker] dhcp_backend`` names an entry point of the
``rescue_worker.dhcp_backends`` namespace; the backend is built when the
network step is, at worker start, and a name that cannot be used stops the
worker with a message that says what to fix.

Plug-ins that are not rescue-worker's own are installed here the way an
operator's would be: a module and a ``.dist-info`` with an
``entry_points.txt`` in a directory on ``sys.path``.
"""

import importlib.metadata
import logging
import os
import textwrap

import pytest
import stevedore
from oslo_config import cfg

from rescue_worker import conf as rw_conf
from rescue_worker import errors
from rescue_worker.cmd import worker as worker_cmd
from rescue_worker.network import base
from rescue_worker.network import dhclient
from rescue_worker.network import networkd
from rescue_worker.network import noop
from rescue_worker.network import udhcpc
from rescue_worker.steps import network

BUILT_IN = {'dhclient': dhclient.DhclientBackend,
            'networkd': networkd.NetworkdBackend,
            'none': noop.NoopBackend,
            'udhcpc': udhcpc.UdhcpcBackend}


def make_conf(tmp_path, **overrides):
    conf = cfg.ConfigOpts()
    rw_conf.register_opts(conf)
    overrides.setdefault('root_dir', str(tmp_path / 'root'))
    overrides.setdefault('state_dir', str(tmp_path / 'state'))
    for name, value in overrides.items():
        conf.set_override(name, value, group=rw_conf.GROUP)
    return conf


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """Install backends from outside the package: ``install(module_name,
    source, **entry_points)``."""
    directory = tmp_path / 'plugins'
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    # stevedore reads a namespace's entry points once per process; a worker
    # starts with its plug-ins installed, a test installs them late.
    monkeypatch.setattr(stevedore.ExtensionManager, 'ENTRY_POINT_CACHE', {})

    def install(module_name, source, **entry_points):
        (directory / (module_name + '.py')).write_text(
            textwrap.dedent(source))
        dist_info = directory / ('%s-1.0.dist-info' % module_name)
        dist_info.mkdir()
        (dist_info / 'METADATA').write_text(
            'Metadata-Version: 2.1\nName: %s\nVersion: 1.0\n' % module_name)
        (dist_info / 'entry_points.txt').write_text(
            '[%s]\n' % base.BACKEND_NAMESPACE + ''.join(
                '%s = %s\n' % item for item in entry_points.items()))
    return install


# -- the built-in backends ----------------------------------------------------

def test_rescue_worker_registers_each_backend_its_option_help_names():
    registered = importlib.metadata.distribution(
        'rescue-worker').entry_points.select(group=base.BACKEND_NAMESPACE)

    assert sorted(ep.name for ep in registered) == sorted(
        name for name, _ in rw_conf.DHCP_BACKENDS)


@pytest.mark.parametrize('name', sorted(BUILT_IN))
def test_load_backend_builds_the_configured_one(tmp_path, name):
    backend = base.load_backend(make_conf(tmp_path, dhcp_backend=name))

    assert type(backend) is BUILT_IN[name]
    assert backend.name == name


def test_the_default_backend_is_dhclient(tmp_path):
    assert isinstance(base.load_backend(make_conf(tmp_path)),
                      dhclient.DhclientBackend)


def test_networkd_writes_under_root_dir(tmp_path):
    backend = base.load_backend(make_conf(tmp_path, dhcp_backend='networkd',
                                          root_dir=str(tmp_path)))

    assert backend.network_file('eth0') == str(
        tmp_path / 'etc' / 'systemd' / 'network' / '50-rescue-eth0.network')


def test_the_network_step_builds_its_backend_when_it_is_built(tmp_path):
    step = network.NetworkStep(make_conf(tmp_path, dhcp_backend='networkd'))

    assert isinstance(step.backend, networkd.NetworkdBackend)


# -- names that cannot be used ------------------------------------------------

def test_an_unknown_name_names_the_installed_backends(tmp_path):
    with pytest.raises(errors.ConfigurationError) as info:
        base.load_backend(make_conf(tmp_path, dhcp_backend='dhcpcd'))

    message = str(info.value)
    assert message.startswith("Unknown DHCP backend 'dhcpcd' in "
                              '[rescue_worker] dhcp_backend')
    assert 'installed backends (dhclient, networkd, none, udhcpc)' in message
    assert 'install the package that provides it' in message


def test_an_unknown_name_stops_the_network_step_from_being_built(tmp_path):
    with pytest.raises(errors.ConfigurationError):
        network.NetworkStep(make_conf(tmp_path, dhcp_backend='dhcpcd'))


def test_a_backend_installed_from_outside_the_package_is_loaded(
        tmp_path, plugins):
    plugins('outside_backend', '''
        from rescue_worker.network import noop

        class OutsideBackend(noop.NoopBackend):
            name = 'outside'
    ''', outside='outside_backend:OutsideBackend')

    backend = base.load_backend(make_conf(tmp_path, dhcp_backend='outside'))

    assert type(backend).__name__ == 'OutsideBackend'
    assert 'outside' in base.installed_backends()


def test_a_backend_whose_module_does_not_import_says_so(tmp_path, plugins):
    plugins('broken_backend', '''
        raise ImportError('libdhcp.so.3: cannot open shared object file')
    ''', broken='broken_backend:Backend')

    with pytest.raises(errors.ConfigurationError) as info:
        base.load_backend(make_conf(tmp_path, dhcp_backend='broken'))

    assert str(info.value) == (
        "DHCP backend 'broken' of [rescue_worker] dhcp_backend failed to "
        'load (ImportError: libdhcp.so.3: cannot open shared object file); '
        'check the installation of the package that provides it.')


def test_an_entry_point_that_is_no_backend_is_refused(tmp_path, plugins):
    plugins('not_a_backend', '''
        class Thing:
            pass
    ''', thing='not_a_backend:Thing')

    with pytest.raises(errors.ConfigurationError) as info:
        base.load_backend(make_conf(tmp_path, dhcp_backend='thing'))

    assert 'not a subclass of rescue_worker.network.base.DhcpBackend' in \
        str(info.value)


def test_a_backend_that_crashes_when_built_says_so(tmp_path, plugins):
    plugins('crashing_backend', '''
        from rescue_worker.network import noop

        class CrashingBackend(noop.NoopBackend):
            @classmethod
            def from_conf(cls, conf):
                return {}['missing']
    ''', crashing='crashing_backend:CrashingBackend')

    with pytest.raises(errors.ConfigurationError) as info:
        base.load_backend(make_conf(tmp_path, dhcp_backend='crashing'))

    assert str(info.value) == (
        "DHCP backend 'crashing' of [rescue_worker] dhcp_backend failed to "
        "start (KeyError: 'missing'); check the installation of the "
        'package that provides it.')


def test_a_backend_that_refuses_its_settings_stops_the_worker(tmp_path):
    conf = make_conf(tmp_path, dhcp_backend='networkd',
                     networkd_reload_command='networkctl "reload')

    with pytest.raises(errors.ConfigurationError) as info:
        network.NetworkStep(conf)

    assert str(info.value) == (
        '[rescue_worker] dhcp_backend = networkd cannot be used as '
        "configured: [rescue_worker] networkd_reload_command 'networkctl "
        '"reload\' cannot be split into words (No closing quotation)')


# -- the rescue-worker command ------------------------------------------------

@pytest.fixture
def restore_logging():
    """``main`` sets up logging for the whole process (oslo.log); put it
    back as it was for the tests that follow."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logger.level
              for name, logger in logging.root.manager.loggerDict.items()
              if isinstance(logger, logging.Logger)}
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, logger_level in levels.items():
        logging.getLogger(name).setLevel(logger_level)


def test_the_command_exits_2_with_one_line_for_an_unknown_backend(
        tmp_path, restore_logging):
    token_file = tmp_path / 'agent-token'
    token_file.write_text('t' * 40)
    os.chmod(token_file, 0o600)
    log_file = tmp_path / 'rescue-worker.log'
    config = tmp_path / 'rescue-worker.conf'
    config.write_text(textwrap.dedent('''\
        [DEFAULT]
        transport_url = rabbit://worker:secret@broker.invalid:5672/
        log_file = %s
        use_stderr = false

        [rescue_worker]
        node_id = node-1
        root_dir = %s
        state_dir = %s
        agent_token_file = %s
        dhcp_backend = noop
        ''' % (log_file, tmp_path / 'root', tmp_path / 'state',
               token_file)))

    status = worker_cmd.main(['--config-file', str(config)])

    assert status == 2
    logged = log_file.read_text()
    errors_logged = [line for line in logged.splitlines() if ' ERROR ' in line]
    assert len(errors_logged) == 1
    assert 'Cannot start: ' in errors_logged[0]
    assert (
        "Unknown DHCP backend 'noop' in [rescue_worker] dhcp_backend: no "
        'entry point of that name in namespace rescue_worker.dhcp_backends. '
        'Use one of the installed backends (dhclient, networkd, none, '
        'udhcpc), or install the package that provides it.'
    ) in errors_logged[0]
    assert 'Traceback' not in logged
