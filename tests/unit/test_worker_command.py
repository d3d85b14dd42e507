"""``rescue-worker`` with configuration it cannot use: exit status 2 and
one line that says what to fix, never a traceback."""

import pytest

from rescue_worker.cmd import worker as worker_cmd


def _config(tmp_path, rescue_worker='', **sections):
    path = tmp_path / 'rescue-worker.conf'
    text = '[DEFAULT]\ntransport_url = fake://\n'
    text += '[rescue_worker]\nnode_id = n1\nstate_dir = %s\n%s\n' % (
        tmp_path / 'state', rescue_worker)
    for name, body in sections.items():
        text += '[%s]\n%s\n' % (name, body)
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize('rescue_worker, sections, named', [
    ('dhcp_timeout = soon', {}, 'dhcp_timeout'),
    ('exit_after_rescue = maybe', {}, 'exit_after_rescue'),
    ('', {'oslo_messaging_rabbit': 'heartbeat_timeout_threshold = never'},
     'heartbeat_timeout_threshold'),
])
def test_a_value_of_the_wrong_type_exits_2_with_one_line(
        tmp_path, capsys, rescue_worker, sections, named):
    config = _config(tmp_path, rescue_worker, **sections)

    status = worker_cmd.main(['--config-file', config])

    assert status == worker_cmd.EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.count('\n') == 1, err
    assert named in err
    assert 'Traceback' not in err


def test_a_node_boots_from_its_kernel_command_line_alone(tmp_path):
    from rescue_worker import contract
    from rescue_worker.cmd import worker as cmd
    cmdline = tmp_path / 'cmdline'
    cmdline.write_text('BOOT_IMAGE=/vmlinuz rescue_worker.node_id=node-boot '
                       'rescue_worker.transport_url=fake:// '
                       'rescue_worker_token=%s\n' % ('t' * 40))

    (tmp_path / 'empty').mkdir()

    conf = cmd.parse_config(['--kernel-cmdline', str(cmdline),
                             '--config-dir', str(tmp_path / 'empty')])

    assert conf.rescue_worker.node_id == 'node-boot'
    assert conf.transport_url == 'fake://'
    assert conf.rescue_worker.topic == contract.DEFAULT_TOPIC
    assert conf.kernel_cmdline == str(cmdline)


def test_without_a_node_id_anywhere_it_says_which_option(tmp_path, capsys):
    cmdline = tmp_path / 'cmdline'
    cmdline.write_text('quiet\n')
    config = tmp_path / 'c.conf'
    config.write_text('[DEFAULT]\ntransport_url = fake://\n')

    status = worker_cmd.main(['--kernel-cmdline', str(cmdline),
                              '--config-file', str(config)])

    assert status == worker_cmd.EXIT_CONFIG
    assert 'node_id' in capsys.readouterr().err
