"""Boot parameters: a rescue ramdisk takes its node id, broker URL and token
from the kernel command line, and a configuration file still wins."""

from oslo_config import cfg

from rescue_worker import boot
from rescue_worker import rpc

URL = 'rabbit://rw-node-1:p%40ss@198.18.0.1:5672/rescue'


def _cmdline(tmp_path, text):
    path = tmp_path / 'cmdline'
    path.write_text(text)
    return str(path)


def _conf(tmp_path, cmdline, config=''):
    conf = cfg.ConfigOpts()
    rpc.register_opts(conf)
    boot.set_defaults(conf, cmdline)
    path = tmp_path / 'rescue-worker.conf'
    path.write_text(config)
    conf(['--config-file', str(path)], default_config_files=[],
         default_config_dirs=[])
    return conf


def test_parameters_reads_every_key_value_word(tmp_path):
    path = _cmdline(tmp_path, 'BOOT_IMAGE=/vmlinuz ro '
                    'rescue_worker.node_id=n1 '
                    'rescue_worker.transport_url=rabbit://h:5672/ quiet\n')

    params = boot.parameters(path)

    assert params[boot.NODE_ID] == 'n1'
    assert params[boot.TRANSPORT_URL] == 'rabbit://h:5672/'
    assert 'ro' not in params


def test_an_unreadable_command_line_gives_nothing(tmp_path):
    assert boot.parameters(str(tmp_path / 'missing')) == {}


def test_a_node_needs_no_file_of_its_own(tmp_path):
    cmdline = _cmdline(tmp_path, 'ro rescue_worker.node_id=node-7 '
                       'rescue_worker.transport_url=%s\n' % URL)

    conf = _conf(tmp_path, cmdline)

    assert conf.rescue_worker.node_id == 'node-7'
    # Percent-encoded as in any URL, and left so for oslo.messaging.
    assert conf.transport_url == URL


def test_a_configuration_file_wins(tmp_path):
    cmdline = _cmdline(tmp_path, 'rescue_worker.node_id=from-boot '
                       'rescue_worker.transport_url=%s\n' % URL)

    conf = _conf(tmp_path, cmdline,
                 '[DEFAULT]\ntransport_url = fake://\n'
                 '[rescue_worker]\nnode_id = from-file\n')

    assert conf.rescue_worker.node_id == 'from-file'
    assert conf.transport_url == 'fake://'


def test_secrets_given_names_what_no_scrub_can_reach(tmp_path):
    cmdline = _cmdline(tmp_path, 'rescue_worker.node_id=n1 '
                       'rescue_worker_token=%s '
                       'rescue_worker.transport_url=%s\n' % ('t' * 40, URL))

    assert sorted(boot.secrets_given(cmdline)) == [
        'broker URL (with its credentials)', 'node token']


def test_a_command_line_without_secrets_names_none(tmp_path):
    cmdline = _cmdline(tmp_path, 'rescue_worker.node_id=n1 quiet\n')

    assert boot.secrets_given(cmdline) == []
