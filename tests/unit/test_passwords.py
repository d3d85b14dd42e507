"""rescue_worker.passwords: the functions the worker's password step, the
conductor's client and rescue-worker-ctl all hash and vet with.

What the step makes of them (every refusal, what it never leaks) is tested
through the step in tests/unit/steps/test_password.py; here are the
functions' own promises, the cost caps above all.
"""

import pathlib
import subprocess
import sys

import pytest
from oslo_config import cfg
from passlib import hash as passlib_hash

from rescue_worker import conf as rw_conf
from rescue_worker import errors
from rescue_worker import passwords

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
PASSWORD = 'correct horse battery staple'
SCHEMES = ('sha512_crypt', 'sha256_crypt', 'bcrypt')
FAST_ROUNDS = {'sha512_crypt': 1000, 'sha256_crypt': 1000, 'bcrypt': 4}
HASHES = {scheme: passwords.hash_password(PASSWORD, scheme, rounds)
          for scheme, rounds in FAST_ROUNDS.items()}


def with_cost(scheme, cost):
    """A well-formed hash of ``scheme`` claiming ``cost`` (its checksum is
    not the password's: vetting cannot tell, and only login would)."""
    value = HASHES[scheme]
    if scheme == 'bcrypt':
        return value.replace('$04$', '$%02d$' % cost)
    return value.replace('rounds=1000$', 'rounds=%d$' % cost)


# -- hashing ---------------------------------------------------------------

@pytest.mark.parametrize('scheme', SCHEMES)
def test_hash_password_uses_the_given_rounds(scheme):
    hashed = passwords.hash_password(PASSWORD, scheme,
                                     rounds=FAST_ROUNDS[scheme])

    handler = getattr(passlib_hash, scheme)
    assert handler.from_string(hashed).rounds == FAST_ROUNDS[scheme]
    assert handler.verify(PASSWORD, hashed)


def test_a_password_of_4096_characters_hashes_and_verifies():
    secret = 'x' * 4095 + '\u00e9'

    hashed = passwords.hash_password(secret, 'sha512_crypt', rounds=1000)

    assert passlib_hash.sha512_crypt.verify(secret, hashed)


def test_bcrypt_hashes_a_password_over_72_bytes_by_its_first_72():
    # The promise of hash_password's docstring. bcrypt 5 breaks it under
    # libpass 1.9.4 (a ValueError for the whole password), which is why
    # requirements.txt keeps bcrypt<5.
    secret = '\u00e9' * 50  # 100 bytes of UTF-8

    hashed = passwords.hash_password(secret, 'bcrypt', rounds=4)

    assert passlib_hash.bcrypt.verify(secret, hashed)
    assert passlib_hash.bcrypt.verify(secret[:36], hashed)
    assert not passlib_hash.bcrypt.verify(secret[:35], hashed)


def test_hash_password_refuses_an_invalid_password():
    with pytest.raises(errors.RescueError) as info:
        passwords.hash_password('', 'sha512_crypt', rounds=1000)

    assert info.value.code == errors.INVALID_PASSWORD


def test_hash_password_refuses_an_unsupported_scheme():
    with pytest.raises(ValueError):
        passwords.hash_password(PASSWORD, 'md5_crypt')


@pytest.mark.parametrize('scheme,rounds', [
    ('sha512_crypt', 1000001), ('sha256_crypt', 999999999), ('bcrypt', 15)])
def test_hash_password_never_makes_a_hash_above_the_default_caps(scheme,
                                                                 rounds):
    with pytest.raises(ValueError) as raised:
        passwords.hash_password(PASSWORD, scheme, rounds=rounds)

    assert 'cap' in str(raised.value)


@pytest.mark.parametrize('scheme', SCHEMES)
def test_passlib_default_cost_is_within_the_default_caps(scheme):
    # A passlib upgrade that raised its defaults above the caps would make
    # nodes refuse the hashes of every up-to-date conductor.
    handler = getattr(passlib_hash, scheme)

    assert passwords.default_rounds(scheme) == handler.default_rounds
    assert passwords.check_cost(scheme, handler.default_rounds) is None


@pytest.mark.parametrize('scheme', SCHEMES)
def test_the_default_cost_drops_to_a_lower_cap(scheme):
    caps = passwords.CostCaps(sha_crypt_rounds=2000, bcrypt_cost=5)

    hashed = passwords.hash_password(PASSWORD, scheme, caps=caps)

    handler = getattr(passlib_hash, scheme)
    assert handler.from_string(hashed).rounds == caps.limit(scheme)


def test_check_plaintext_accepts_unicode_and_spaces():
    passwords.check_plaintext(' p\u00e4ss w\u00f6rd \u2603 ')


def test_importing_and_using_the_module_is_quiet():
    code = ('import logging, warnings\n'
            'logging.basicConfig(level=logging.INFO)\n'
            'warnings.simplefilter("error")\n'
            'from rescue_worker import passwords\n'
            'passwords.hash_password("pw", "bcrypt", rounds=4)\n')
    result = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert 'passlib' not in result.stderr
    assert 'crypt' not in result.stderr


# -- vetting a hash --------------------------------------------------------

@pytest.mark.parametrize('scheme', SCHEMES)
def test_identify_hash_returns_the_scheme_name(scheme):
    assert passwords.identify_hash(HASHES[scheme], SCHEMES) == scheme


def test_identify_hash_refuses_an_unsupported_accepted_scheme():
    with pytest.raises(ValueError):
        passwords.identify_hash(HASHES['sha512_crypt'], ['md5_crypt'])


@pytest.mark.parametrize('scheme,cost', [
    ('sha512_crypt', 999999999), ('sha512_crypt', 1000001),
    ('sha256_crypt', 1000001), ('bcrypt', 31), ('bcrypt', 15)])
def test_a_hash_over_the_default_caps_is_refused(scheme, cost):
    value = with_cost(scheme, cost)

    with pytest.raises(errors.RescueError) as raised:
        passwords.identify_hash(value, SCHEMES)

    assert raised.value.code == errors.INVALID_HASH
    assert value not in raised.value.message
    assert str(cost) not in raised.value.message
    assert raised.value.__context__ is None


@pytest.mark.parametrize('scheme,cost', [
    ('sha512_crypt', 1000000), ('sha256_crypt', 1000000), ('bcrypt', 14)])
def test_a_hash_at_the_default_caps_is_accepted(scheme, cost):
    assert passwords.identify_hash(with_cost(scheme, cost), SCHEMES) == \
        scheme


def test_the_caps_given_are_the_caps_applied():
    caps = passwords.CostCaps(sha_crypt_rounds=2000, bcrypt_cost=31)

    passwords.identify_hash(with_cost('bcrypt', 31), SCHEMES, caps)
    passwords.identify_hash(with_cost('sha512_crypt', 2000), SCHEMES, caps)
    with pytest.raises(errors.RescueError) as raised:
        passwords.identify_hash(with_cost('sha512_crypt', 2001), SCHEMES,
                                caps)

    assert 'at most 2000' in raised.value.message


def test_the_cap_options_default_to_the_default_caps():
    conf = cfg.ConfigOpts()
    rw_conf.register_opts(conf)
    opts = conf.rescue_worker

    assert passwords.CostCaps(opts.max_sha_crypt_rounds,
                              opts.max_bcrypt_cost) == passwords.DEFAULT_CAPS


def test_how_to_send_names_the_accepted_schemes_and_a_tool():
    advice = passwords.how_to_send(['bcrypt', 'sha256_crypt', 'bcrypt'])

    assert advice.startswith('send a bcrypt or sha256_crypt hash')
    assert '`mkpasswd -m bcrypt`' in advice


# -- verifying -------------------------------------------------------------

@pytest.mark.parametrize('scheme', SCHEMES)
def test_verify_password_tells_the_right_password_from_a_wrong_one(scheme):
    assert passwords.verify_password(PASSWORD, HASHES[scheme]) is True
    assert passwords.verify_password(PASSWORD + '!', HASHES[scheme]) is False


@pytest.mark.parametrize('value', [
    '!', '*', '', '!' + HASHES['sha512_crypt'],
    passlib_hash.md5_crypt.hash(PASSWORD)],
    ids=['locked', 'no_password', 'empty', 'locked_hash', 'md5_crypt'])
def test_verify_password_is_none_for_what_is_no_supported_hash(value):
    assert passwords.verify_password(PASSWORD, value) is None
    assert passwords.recognised_scheme(value) is None


@pytest.mark.parametrize('scheme', SCHEMES)
def test_recognised_scheme_names_the_scheme(scheme):
    assert passwords.recognised_scheme(HASHES[scheme]) == scheme
