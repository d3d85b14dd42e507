"""rescue-worker-ctl --help: every option says what it does and its
default, every command lists the exit statuses, --version."""

import argparse
import re

import pytest

from rescue_worker import version
from rescue_worker.cmd import ctl

COMMANDS = ('finalize', 'status', 'watch', 'demo')


def _subparsers(parser):
    [sub] = [a for a in parser._actions
             if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def _help(capsys, *args):
    with pytest.raises(SystemExit) as raised:
        ctl.main([*args, '--help'])
    assert raised.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize('command', COMMANDS)
def test_every_option_has_help_and_its_default(command, capsys):
    parser = _subparsers(ctl.build_parser())[command]
    text = ' '.join(_help(capsys, command).split())

    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, '%s %s has no help' % (
            command, action.option_strings or action.dest)
        takes_value = action.option_strings and action.nargs != 0
        if takes_value and action.default is not None:
            assert '(default: %s)' % action.default in text, (
                command, action.option_strings)


@pytest.mark.parametrize('args', [(), *((c,) for c in COMMANDS)])
def test_help_lists_every_exit_status(args, capsys):
    text = _help(capsys, *args)

    for name, status in (('EXIT_OK', 0), ('EXIT_FAILED', 1),
                         ('EXIT_USAGE', 2), ('EXIT_BROKER', 3),
                         ('EXIT_TIMEOUT', 4), ('EXIT_REFUSED', 5),
                         ('EXIT_INTERRUPTED', 130)):
        assert getattr(ctl, name) == status
        assert re.search(r'^  %d +\S' % status, text, re.M), (name, text)
    assert 'exit status:' in text


def test_the_help_lists_every_exit_status_the_command_uses():
    in_help = re.findall(r'^  (\d+) ', ctl.EXIT_STATUSES, re.M)
    constants = sorted(value for name, value in vars(ctl).items()
                       if name.startswith('EXIT_') and isinstance(value, int))

    assert in_help == [str(value) for value in constants] == [
        '0', '1', '2', '3', '4', '5', '130']


def test_help_fits_a_terminal(capsys, monkeypatch):
    monkeypatch.setenv('COLUMNS', '80')

    for args in [(), *((c,) for c in COMMANDS)]:
        text = _help(capsys, *args)
        long = [line for line in text.splitlines() if len(line) > 80
                and not line.lstrip().startswith(('[', 'usage'))]
        assert long == [], args


def test_version_is_the_package_version(capsys):
    with pytest.raises(SystemExit) as raised:
        ctl.main(['--version'])

    assert raised.value.code == 0
    assert capsys.readouterr().out == 'rescue-worker-ctl %s\n' % \
        version.version_string()


@pytest.mark.parametrize('args', [
    ['status', 'n1', '--timeout', '0'],
    ['status', 'n1', '--timeout', '-5'],
    ['finalize', 'n1', '--timeout', 'soon'],
    ['finalize', 'n1', '--start-timeout', 'nan'],
    ['watch', '--timeout', '-1'],
    ['watch', '--count', '-1'],
    ['demo', '--timeout', 'inf'],
])
def test_a_time_limit_that_is_not_one_is_usage(args, capsys):
    with pytest.raises(SystemExit) as raised:
        ctl.main(args)

    assert raised.value.code == ctl.EXIT_USAGE
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    assert 'error: argument' in err


def test_watch_timeout_0_means_never():
    args = ctl.build_parser().parse_args(['watch', '--timeout', '0'])

    assert args.timeout == 0
