"""Agent token: loaded only from a private source, checked in constant time."""

import logging
import os

import pytest
from oslo_config import cfg

from rescue_worker import agent_token
from rescue_worker import conf as rw_conf
from rescue_worker import errors

TOKEN = 'tok-' + '0123456789abcdef' * 2  # 36 characters
OTHER = 'tok-' + 'fedcba9876543210' * 2


def _conf(tmp_path, **options):
    """A ConfigOpts loaded from a config file with ``options``."""
    conf = cfg.ConfigOpts()
    rw_conf.register_opts(conf)
    lines = ['[rescue_worker]', 'node_id = n1']
    lines += ['%s = %s' % (name, value) for name, value in options.items()]
    path = tmp_path / 'rescue-worker.conf'
    path.write_text('\n'.join(lines) + '\n')
    conf(['--config-file', str(path)], default_config_files=[],
         default_config_dirs=[])
    return conf


def _token_file(tmp_path, content, mode=0o600):
    path = tmp_path / 'agent-token'
    path.write_text(content)
    os.chmod(path, mode)
    return path


@pytest.fixture
def no_cmdline(tmp_path):
    path = tmp_path / 'cmdline'
    path.write_text('BOOT_IMAGE=/vmlinuz ro quiet\n')
    return str(path)


def _cmdline(tmp_path, token):
    path = tmp_path / 'cmdline'
    path.write_text('BOOT_IMAGE=/vmlinuz ro rescue_worker_token=%s quiet\n'
                    % token)
    return str(path)


# -- the token file --------------------------------------------------------

def test_token_file_with_mode_0600_is_accepted(tmp_path, no_cmdline):
    path = _token_file(tmp_path, TOKEN)
    conf = _conf(tmp_path, agent_token_file=path)

    assert agent_token.load_token(conf, no_cmdline) == TOKEN


def test_token_file_with_mode_0400_is_accepted(tmp_path, no_cmdline):
    path = _token_file(tmp_path, TOKEN, mode=0o400)
    conf = _conf(tmp_path, agent_token_file=path)

    assert agent_token.load_token(conf, no_cmdline) == TOKEN


def test_surrounding_whitespace_and_newline_are_stripped(tmp_path,
                                                        no_cmdline):
    path = _token_file(tmp_path, '  \t%s \n\n' % TOKEN)
    conf = _conf(tmp_path, agent_token_file=path)

    assert agent_token.load_token(conf, no_cmdline) == TOKEN


@pytest.mark.parametrize('mode', [0o640, 0o604, 0o660, 0o644, 0o610,
                                  0o601, 0o620, 0o602])
def test_token_file_accessible_to_group_or_others_is_refused(
        tmp_path, no_cmdline, mode):
    path = _token_file(tmp_path, TOKEN, mode=mode)
    conf = _conf(tmp_path, agent_token_file=path)

    with pytest.raises(errors.ConfigurationError) as exc_info:
        agent_token.load_token(conf, no_cmdline)

    assert 'chmod 600' in str(exc_info.value)
    assert str(path) in str(exc_info.value)
    assert TOKEN not in str(exc_info.value)


def test_loose_token_file_is_refused_even_with_a_cmdline_token(tmp_path):
    path = _token_file(tmp_path, TOKEN, mode=0o644)
    conf = _conf(tmp_path, agent_token_file=path)

    with pytest.raises(errors.ConfigurationError):
        agent_token.load_token(conf, _cmdline(tmp_path, OTHER))


def test_token_of_31_characters_is_refused(tmp_path, no_cmdline):
    short = 'x' * 31
    path = _token_file(tmp_path, short)
    conf = _conf(tmp_path, agent_token_file=path)

    with pytest.raises(errors.ConfigurationError) as exc_info:
        agent_token.load_token(conf, no_cmdline)

    assert '31' in str(exc_info.value)
    assert short not in str(exc_info.value)


def test_token_of_32_characters_is_accepted(tmp_path, no_cmdline):
    token = 'y' * 32
    path = _token_file(tmp_path, token)
    conf = _conf(tmp_path, agent_token_file=path)

    assert agent_token.load_token(conf, no_cmdline) == token


def test_length_is_counted_after_stripping_whitespace(tmp_path, no_cmdline):
    path = _token_file(tmp_path, ' %s \n' % ('z' * 31))
    conf = _conf(tmp_path, agent_token_file=path)

    with pytest.raises(errors.ConfigurationError):
        agent_token.load_token(conf, no_cmdline)


def test_empty_token_file_is_refused(tmp_path, no_cmdline):
    path = _token_file(tmp_path, '\n')
    conf = _conf(tmp_path, agent_token_file=path)

    with pytest.raises(errors.ConfigurationError):
        agent_token.load_token(conf, no_cmdline)


def test_token_file_wins_over_the_cmdline(tmp_path):
    path = _token_file(tmp_path, TOKEN)
    conf = _conf(tmp_path, agent_token_file=path)

    assert agent_token.load_token(conf, _cmdline(tmp_path, OTHER)) == TOKEN


def test_loading_logs_the_source_but_not_the_token(tmp_path, no_cmdline,
                                                   caplog):
    path = _token_file(tmp_path, TOKEN)
    conf = _conf(tmp_path, agent_token_file=path)

    with caplog.at_level(logging.DEBUG):
        agent_token.load_token(conf, no_cmdline)

    assert str(path) in caplog.text
    assert TOKEN not in caplog.text


# -- the kernel command line -----------------------------------------------

def test_cmdline_token_is_used_when_the_file_is_missing(tmp_path):
    conf = _conf(tmp_path, agent_token_file=tmp_path / 'missing')

    assert agent_token.load_token(conf, _cmdline(tmp_path, TOKEN)) == TOKEN


def test_cmdline_token_is_used_when_no_file_is_configured(tmp_path):
    conf = _conf(tmp_path, agent_token_file='')

    assert agent_token.load_token(conf, _cmdline(tmp_path, TOKEN)) == TOKEN


def test_cmdline_token_as_last_word_without_newline(tmp_path):
    conf = _conf(tmp_path, agent_token_file=tmp_path / 'missing')
    cmdline = tmp_path / 'cmdline'
    cmdline.write_text('ro quiet rescue_worker_token=%s' % TOKEN)

    assert agent_token.load_token(conf, str(cmdline)) == TOKEN


def test_similar_cmdline_key_is_not_taken_for_the_token(tmp_path):
    conf = _conf(tmp_path, agent_token_file=tmp_path / 'missing')
    cmdline = tmp_path / 'cmdline'
    cmdline.write_text('my_rescue_worker_token=%s rescue_worker_tok=%s\n'
                       % (TOKEN, TOKEN))

    with pytest.raises(errors.ConfigurationError):
        agent_token.load_token(conf, str(cmdline))


def test_short_cmdline_token_is_refused_without_showing_it(tmp_path):
    short = 'q' * 31
    conf = _conf(tmp_path, agent_token_file=tmp_path / 'missing')

    with pytest.raises(errors.ConfigurationError) as exc_info:
        agent_token.load_token(conf, _cmdline(tmp_path, short))

    assert short not in str(exc_info.value)


def test_empty_cmdline_token_is_refused(tmp_path):
    conf = _conf(tmp_path, agent_token_file=tmp_path / 'missing')

    with pytest.raises(errors.ConfigurationError):
        agent_token.load_token(conf, _cmdline(tmp_path, ''))


# -- no token at all -------------------------------------------------------

def test_no_token_anywhere_is_a_configuration_error(tmp_path, no_cmdline):
    conf = _conf(tmp_path, agent_token_file=tmp_path / 'missing')

    with pytest.raises(errors.ConfigurationError) as exc_info:
        agent_token.load_token(conf, no_cmdline)

    assert 'allow_unauthenticated' in str(exc_info.value)


def test_missing_cmdline_file_counts_as_no_token(tmp_path):
    conf = _conf(tmp_path, agent_token_file=tmp_path / 'missing')

    with pytest.raises(errors.ConfigurationError):
        agent_token.load_token(conf, str(tmp_path / 'no-cmdline'))


def test_no_token_with_allow_unauthenticated_returns_none(tmp_path,
                                                          no_cmdline):
    conf = _conf(tmp_path, agent_token_file=tmp_path / 'missing',
                 allow_unauthenticated='true')

    assert agent_token.load_token(conf, no_cmdline) is None


def test_no_token_with_allow_unauthenticated_logs_a_warning(tmp_path,
                                                            no_cmdline,
                                                            caplog):
    conf = _conf(tmp_path, agent_token_file=tmp_path / 'missing',
                 allow_unauthenticated='true')

    with caplog.at_level(logging.WARNING,
                         logger='rescue_worker.agent_token'):
        agent_token.load_token(conf, no_cmdline)

    assert any(r.levelno == logging.WARNING
               and r.name == 'rescue_worker.agent_token'
               for r in caplog.records)


def test_allow_unauthenticated_still_uses_a_token_that_exists(tmp_path,
                                                              no_cmdline):
    path = _token_file(tmp_path, TOKEN)
    conf = _conf(tmp_path, agent_token_file=path,
                 allow_unauthenticated='true')

    assert agent_token.load_token(conf, no_cmdline) == TOKEN


def test_allow_unauthenticated_does_not_accept_a_short_token(tmp_path,
                                                             no_cmdline):
    path = _token_file(tmp_path, 'short')
    conf = _conf(tmp_path, agent_token_file=path,
                 allow_unauthenticated='true')

    with pytest.raises(errors.ConfigurationError):
        agent_token.load_token(conf, no_cmdline)


# -- TokenCheck ------------------------------------------------------------

def test_right_token_passes():
    agent_token.TokenCheck(TOKEN).verify(TOKEN)


def test_token_check_is_required_with_a_token():
    assert agent_token.TokenCheck(TOKEN).required is True


@pytest.mark.parametrize('candidate', [
    OTHER,
    TOKEN[:-1] + ('0' if TOKEN[-1] != '0' else '1'),  # last char differs
    TOKEN[:-1],  # one short
    TOKEN + 'x',  # one long
    TOKEN[:8],
    '',
    TOKEN.upper(),
    ' %s ' % TOKEN,
    None,
    12345,
    TOKEN.encode(),
    [TOKEN],
    '\ud800' * 40,  # lone surrogates: not encodable as UTF-8
], ids=['other', 'last-char', 'one-short', 'one-long', 'prefix', 'empty',
        'upper', 'padded', 'none', 'int', 'bytes', 'list', 'surrogates'])
def test_wrong_token_is_unauthorized(candidate):
    check = agent_token.TokenCheck(TOKEN)

    with pytest.raises(errors.RescueError) as exc_info:
        check.verify(candidate)

    assert exc_info.value.code == errors.UNAUTHORIZED
    assert TOKEN not in str(exc_info.value)
    assert TOKEN not in exc_info.value.message
    assert TOKEN not in repr(exc_info.value)


def test_unauthorized_error_as_dict_does_not_contain_the_token():
    with pytest.raises(errors.RescueError) as exc_info:
        agent_token.TokenCheck(TOKEN).verify(OTHER)

    assert exc_info.value.as_dict()['code'] == 'unauthorized'
    assert TOKEN not in str(exc_info.value.as_dict())


def test_non_ascii_token_is_compared_exactly():
    token = 'jeton-ünïcødé-' + 'é' * 30
    check = agent_token.TokenCheck(token)

    check.verify(token)
    with pytest.raises(errors.RescueError):
        check.verify(token[:-1] + 'e')


@pytest.mark.parametrize('candidate', [TOKEN, '', None, 12345, object()])
def test_token_check_without_token_lets_anything_through(candidate):
    agent_token.TokenCheck(None).verify(candidate)


def test_token_check_without_token_is_not_required():
    assert agent_token.TokenCheck(None).required is False


def test_repr_hides_the_token():
    check = agent_token.TokenCheck(TOKEN)

    assert TOKEN not in repr(check)
    assert TOKEN not in str(check)


def test_a_fifo_in_place_of_the_token_file_is_refused_at_once(tmp_path,
                                                              no_cmdline):
    fifo = tmp_path / 'agent-token'
    os.mkfifo(fifo, 0o600)
    conf = _conf(tmp_path, agent_token_file=str(fifo))
    outcome = []

    # No writer ever opens the FIFO: a blocking open would never return.
    def load():
        try:
            agent_token.load_token(conf, no_cmdline)
        except errors.ConfigurationError as exc:
            outcome.append(str(exc))
    import threading
    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    loader.join(10)

    assert not loader.is_alive(), 'load_token blocked on a FIFO'
    assert outcome and 'not a regular file' in outcome[0]
