"""The password step: what it hashes, what it accepts, what it refuses.

A plaintext password is hashed with the configured scheme; a pre-hashed one
is accepted only if it is a clean hash of an accepted scheme within the
configured cost caps. Every refusal carries a stable code and a message that
says what to fix without ever quoting the password or the hash. (The pure
functions behind the step are tested in tests/unit/test_passwords.py.)
"""

import traceback

import pytest
from oslo_config import cfg
from passlib import hash as passlib_hash

from rescue_worker import conf as rw_conf
from rescue_worker import errors
from rescue_worker import passwords
from rescue_worker import pipeline
from rescue_worker.steps import password

PASSWORD = 'correct horse battery staple'
SCHEMES = ('sha512_crypt', 'sha256_crypt', 'bcrypt')
# Low costs keep the tests fast; only one test uses the configured default.
FAST_ROUNDS = {'sha512_crypt': 1000, 'sha256_crypt': 1000, 'bcrypt': 4}


def fast_hash(scheme, secret=PASSWORD):
    return passwords.hash_password(secret, scheme,
                                   rounds=FAST_ROUNDS[scheme])


SHA512 = fast_hash('sha512_crypt')
SHA256 = fast_hash('sha256_crypt')
BCRYPT = fast_hash('bcrypt')
HASHES = {'sha512_crypt': SHA512, 'sha256_crypt': SHA256, 'bcrypt': BCRYPT}


def checksum(value):
    """The part of a modular crypt hash after its last '$'."""
    return value.rsplit('$', 1)[-1]


def with_wrong_bcrypt_padding(value):
    """``value`` with non-zero padding bits in the last salt character."""
    alphabet = ('./ABCDEFGHIJKLMNOPQRSTUVWXYZ'
                'abcdefghijklmnopqrstuvwxyz0123456789')
    last = value[28]
    return value[:28] + alphabet[alphabet.index(last) ^ 1] + value[29:]


# Every pre-hashed value the step must refuse with invalid_hash.
REFUSED_HASHES = {
    'md5_crypt': passlib_hash.md5_crypt.hash(PASSWORD),
    'apr_md5_crypt': passlib_hash.apr_md5_crypt.hash(PASSWORD),
    'des_crypt': passlib_hash.des_crypt.hash(PASSWORD),
    'bsdi_crypt': passlib_hash.bsdi_crypt.hash(PASSWORD),
    'yescrypt': '$y$j9T$F5Jx5fExrKuPp53xLKQ..1$'
                'X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7',
    'garbage': 'this is not a hash at all',
    'empty': '',
    'too_long': '$6$' + 'a' * 4094,
    'colon_appended': SHA512 + ':',
    'colon_inserted': SHA512[:20] + ':' + SHA512[20:],
    'newline_appended': SHA512 + '\n',
    'newline_inserted': SHA512[:20] + '\nrescue::0:0::/root:/bin/sh\n',
    'tab': SHA512 + '\t',
    'delete_character': SHA512[:20] + '\x7f' + SHA512[20:],
    'non_ascii': SHA512[:-1] + '\u00e9',
    'truncated_checksum': SHA512[:-3],
    'bare_salt': SHA512.rsplit('$', 1)[0],
    'scheme_id_only': '$6$',
    'rounds_too_low': SHA512.replace('rounds=1000', 'rounds=999'),
    'truncated_bcrypt': BCRYPT[:-1],
    'bcrypt_padding_bits': with_wrong_bcrypt_padding(BCRYPT),
    # Well-formed, but every login would hash for minutes (sha) or days
    # (bcrypt); the checksums do not matter, no one can log in to check.
    'sha512_rounds_over_cap': SHA512.replace('rounds=1000$',
                                             'rounds=999999999$'),
    'sha256_rounds_over_cap': SHA256.replace('rounds=1000$',
                                             'rounds=1000001$'),
    'bcrypt_cost_over_cap': BCRYPT.replace('$04$', '$31$'),
}


@pytest.fixture
def conf():
    """A private configuration with the worker's options at their defaults.

    Registered options can be read and overridden without parsing, so the
    required node_id never has to be supplied.
    """
    conf = cfg.ConfigOpts()
    rw_conf.register_opts(conf)
    return conf


def configure(conf, **overrides):
    for name, value in overrides.items():
        conf.set_override(name, value, group=rw_conf.GROUP)


@pytest.fixture
def step(conf):
    return password.PasswordStep(conf)


@pytest.fixture
def fast_rounds(conf):
    """Caps so low that run() hashes at FAST_ROUNDS instead of passlib's
    default cost (a node hashes at its cap when the cap is lower)."""
    configure(conf, max_sha_crypt_rounds=FAST_ROUNDS['sha512_crypt'],
              max_bcrypt_cost=FAST_ROUNDS['bcrypt'])


def request(value, hashed=False):
    return pipeline.RescueRequest('req-1', value, hashed=hashed)


def new_state():
    return pipeline.RescueState(username='rescue')


def refusal(step, req):
    """The error check() raises for ``req``; run() must raise the same."""
    with pytest.raises(errors.RescueError) as checked:
        step.check(req)
    state = new_state()
    with pytest.raises(errors.RescueError) as ran:
        step.run(req, state)
    assert (ran.value.code, ran.value.message) == \
        (checked.value.code, checked.value.message)
    assert state.password_hash is None
    assert state.hash_scheme is None
    return checked.value


# -- plaintext -----------------------------------------------------------

def test_the_step_is_registered_as_password(step):
    assert step.name == 'password'
    assert isinstance(step, pipeline.Step)


@pytest.mark.parametrize('scheme', SCHEMES)
def test_plaintext_is_hashed_with_the_configured_scheme(conf, step, scheme,
                                                        fast_rounds):
    configure(conf, hash_scheme=scheme)
    state = new_state()

    detail = step.run(request(PASSWORD), state)

    handler = getattr(passlib_hash, scheme)
    assert handler.identify(state.password_hash)
    assert handler.verify(PASSWORD, state.password_hash)
    assert not handler.verify(PASSWORD + '!', state.password_hash)
    assert state.hash_scheme == scheme
    assert detail == 'hashed with %s' % scheme


def test_plaintext_is_hashed_by_default_with_sha512_crypt_at_default_rounds(
        step):
    # The only test that pays passlib's real cost (about a second).
    state = new_state()

    step.run(request(PASSWORD), state)

    assert state.hash_scheme == 'sha512_crypt'
    parsed = passlib_hash.sha512_crypt.from_string(state.password_hash)
    assert parsed.rounds == passlib_hash.sha512_crypt.default_rounds
    assert passlib_hash.sha512_crypt.verify(PASSWORD, state.password_hash)
    # What a node hashes by default, it also accepts pre-hashed.
    step.check(request(state.password_hash, hashed=True))


def test_each_run_uses_a_fresh_salt(conf, step, fast_rounds):
    configure(conf, hash_scheme='bcrypt')
    first, second = new_state(), new_state()

    step.run(request(PASSWORD), first)
    step.run(request(PASSWORD), second)

    assert first.password_hash != second.password_hash


def test_plaintext_is_refused_when_only_hashes_are_allowed(conf, step):
    configure(conf, require_hashed=True)

    exc = refusal(step, request(PASSWORD))

    assert exc.code == errors.PLAINTEXT_REFUSED
    assert 'hashed=True' in exc.message
    assert 'require_hashed' in exc.message


def test_a_hash_is_still_accepted_when_only_hashes_are_allowed(conf, step):
    configure(conf, require_hashed=True)

    step.check(request(SHA512, hashed=True))


def test_an_empty_password_is_refused(step):
    exc = refusal(step, request(''))

    assert exc.code == errors.INVALID_PASSWORD
    assert 'empty' in exc.message


def test_a_password_of_4097_characters_is_refused(step):
    exc = refusal(step, request('x' * 4097))

    assert exc.code == errors.INVALID_PASSWORD
    assert '4096' in exc.message


# At fast rounds: the cost of SHA-crypt grows with the password's length,
# 5 to 10 s for these at the default rounds.
@pytest.mark.parametrize('secret', ['x' * 4096, '\u00e9' * 4096],
                         ids=['ascii', 'non-ascii'])
def test_a_password_of_4096_characters_is_accepted(step, fast_rounds,
                                                   secret):
    checked = step.check(request(secret))

    assert passlib_hash.sha512_crypt.verify(secret, checked.password_hash)


def test_a_password_over_4096_utf8_bytes_is_refused_under_bcrypt(conf, step):
    configure(conf, hash_scheme='bcrypt')

    exc = refusal(step, request('\u00e9' * 2049))

    assert exc.code == errors.INVALID_PASSWORD
    assert 'bytes' in exc.message


def test_a_password_with_a_nul_byte_is_refused(step):
    exc = refusal(step, request('pass\0word'))

    assert exc.code == errors.INVALID_PASSWORD
    assert 'NUL' in exc.message


def test_a_password_with_a_lone_surrogate_is_refused(step):
    exc = refusal(step, request('pass\ud800word'))

    assert exc.code == errors.INVALID_PASSWORD


# -- pre-hashed ----------------------------------------------------------

@pytest.mark.parametrize('scheme', SCHEMES)
def test_a_hash_of_an_accepted_scheme_is_stored_unchanged(step, scheme):
    value = HASHES[scheme]
    state = new_state()

    detail = step.run(request(value, hashed=True), state)

    assert state.password_hash == value
    assert state.hash_scheme == scheme
    assert detail == 'accepted a %s hash' % scheme


@pytest.mark.parametrize('value', [
    passlib_hash.sha512_crypt.using(rounds=5000).hash(PASSWORD),
    passlib_hash.sha256_crypt.using(rounds=5000).hash(PASSWORD),
    passlib_hash.bcrypt.using(rounds=4, ident='2a').hash(PASSWORD),
    passlib_hash.bcrypt.using(rounds=4, ident='2y').hash(PASSWORD),
], ids=['sha512_implicit_rounds', 'sha256_implicit_rounds', 'bcrypt_2a',
        'bcrypt_2y'])
def test_common_variants_of_accepted_schemes_are_accepted(step, value):
    step.check(request(value, hashed=True))


@pytest.mark.parametrize('name', ['md5_crypt', 'apr_md5_crypt', 'des_crypt',
                                  'bsdi_crypt'])
def test_a_weak_hash_is_refused_as_weak_and_the_accepted_schemes_listed(
        step, name):
    exc = refusal(step, request(REFUSED_HASHES[name], hashed=True))

    assert exc.code == errors.INVALID_HASH
    assert 'weak' in exc.message
    assert 'sha512_crypt, sha256_crypt or bcrypt' in exc.message


def test_a_yescrypt_hash_is_named_as_unsupported(step):
    exc = refusal(step, request(REFUSED_HASHES['yescrypt'], hashed=True))

    assert exc.code == errors.INVALID_HASH
    assert 'yescrypt' in exc.message
    assert 'mkpasswd -m sha-512' in exc.message


@pytest.mark.parametrize('name', ['garbage', 'empty', 'too_long'])
def test_a_value_that_is_no_hash_is_refused(step, name):
    exc = refusal(step, request(REFUSED_HASHES[name], hashed=True))

    assert exc.code == errors.INVALID_HASH
    assert 'mkpasswd -m sha-512' in exc.message


@pytest.mark.parametrize('name', [
    'colon_appended', 'colon_inserted', 'newline_appended',
    'newline_inserted', 'tab', 'delete_character', 'non_ascii'])
def test_a_hash_with_a_character_unfit_for_shadow_is_refused(step, name):
    exc = refusal(step, request(REFUSED_HASHES[name], hashed=True))

    assert exc.code == errors.INVALID_HASH
    assert 'the hash contains' in exc.message


@pytest.mark.parametrize('name', [
    'truncated_checksum', 'bare_salt', 'scheme_id_only', 'rounds_too_low',
    'truncated_bcrypt', 'bcrypt_padding_bits'])
def test_a_malformed_hash_of_an_accepted_scheme_is_refused(step, name):
    exc = refusal(step, request(REFUSED_HASHES[name], hashed=True))

    assert exc.code == errors.INVALID_HASH
    assert 'does not parse' in exc.message


def test_a_hash_of_a_scheme_not_accepted_here_is_refused(conf, step):
    configure(conf, accepted_hash_schemes=['sha512_crypt'])

    exc = refusal(step, request(BCRYPT, hashed=True))

    assert exc.code == errors.INVALID_HASH
    assert 'accepted_hash_schemes' in exc.message
    assert 'send a sha512_crypt hash' in exc.message
    step.check(request(SHA512, hashed=True))


def test_no_hash_is_accepted_when_no_scheme_is(conf, step):
    configure(conf, accepted_hash_schemes=[])

    exc = refusal(step, request(SHA512, hashed=True))

    assert exc.code == errors.INVALID_HASH
    assert 'hashed=False' in exc.message


def test_a_plaintext_that_looks_like_a_hash_is_hashed_not_stored(
        step, fast_rounds):
    state = new_state()

    step.run(request(SHA512, hashed=False), state)

    assert state.password_hash != SHA512
    assert passlib_hash.sha512_crypt.verify(SHA512, state.password_hash)


# -- hash cost caps -------------------------------------------------------

@pytest.mark.parametrize('name,cap,option', [
    ('sha512_rounds_over_cap', 1000000, 'max_sha_crypt_rounds'),
    ('sha256_rounds_over_cap', 1000000, 'max_sha_crypt_rounds'),
    ('bcrypt_cost_over_cap', 14, 'max_bcrypt_cost'),
])
def test_a_hash_costlier_than_the_default_cap_is_refused_naming_the_cap(
        step, name, cap, option):
    exc = refusal(step, request(REFUSED_HASHES[name], hashed=True))

    assert exc.code == errors.INVALID_HASH
    assert 'at most %d, [rescue_worker] %s' % (cap, option) in exc.message
    assert 'raise %s on the node' % option in exc.message


def test_the_refused_cost_itself_is_not_quoted(step):
    exc = refusal(step, request(REFUSED_HASHES['sha512_rounds_over_cap'],
                                hashed=True))

    assert '999999999' not in exc.message


@pytest.mark.parametrize('value', [
    SHA512.replace('rounds=1000$', 'rounds=1000000$'),
    SHA256.replace('rounds=1000$', 'rounds=1000000$'),
    BCRYPT.replace('$04$', '$14$'),
], ids=['sha512', 'sha256', 'bcrypt'])
def test_a_hash_at_the_default_cap_is_accepted(step, value):
    step.check(request(value, hashed=True))


def test_a_lower_configured_cap_refuses_what_the_default_accepts(conf,
                                                                 step):
    value = SHA512.replace('rounds=1000$', 'rounds=6000$')
    step.check(request(value, hashed=True))
    configure(conf, max_sha_crypt_rounds=5000, max_bcrypt_cost=10)

    sha = refusal(step, request(value, hashed=True))
    bcrypt = refusal(step, request(BCRYPT.replace('$04$', '$11$'),
                                   hashed=True))

    assert 'at most 5000, [rescue_worker] max_sha_crypt_rounds' in \
        sha.message
    assert 'at most 10, [rescue_worker] max_bcrypt_cost' in bcrypt.message


def test_a_raised_cap_accepts_a_costlier_hash(conf, step):
    configure(conf, max_sha_crypt_rounds=999999999, max_bcrypt_cost=31)

    step.check(request(REFUSED_HASHES['sha512_rounds_over_cap'],
                       hashed=True))
    step.check(request(REFUSED_HASHES['bcrypt_cost_over_cap'], hashed=True))


@pytest.mark.parametrize('scheme', SCHEMES)
def test_plaintext_is_hashed_at_the_cap_when_it_is_below_the_default(
        conf, step, scheme, fast_rounds):
    configure(conf, hash_scheme=scheme)
    state = new_state()

    step.run(request(PASSWORD), state)

    parsed = getattr(passlib_hash, scheme).from_string(state.password_hash)
    assert parsed.rounds == FAST_ROUNDS[scheme]


# -- refusals never leak the secret --------------------------------------

def _secret_parts(value):
    """The value and its checksum part, when long enough to mean anything."""
    parts = {value, checksum(value), value.strip()}
    return {part for part in parts if len(part) >= 4}


REFUSALS = (
    [pytest.param(request(value, hashed=True), id='hash-' + name)
     for name, value in REFUSED_HASHES.items()] +
    [pytest.param(request(value), id='plaintext-' + name)
     for name, value in {
         'too_long': 'Tr0ub4dor&3-' * 342,
         'nul': 'Tr0ub4dor&3\0correct-horse',
         'surrogate': 'Tr0ub4dor&3\udc80correct-horse',
     }.items()])


@pytest.mark.parametrize('req', REFUSALS)
def test_a_refusal_never_contains_the_value_or_its_checksum(step, req):
    exc = refusal(step, req)

    # Nothing may chain a passlib exception that could quote the value.
    assert exc.__cause__ is None
    assert exc.__context__ is None
    shown = [str(exc), repr(exc), exc.message, repr(exc.args),
             ''.join(traceback.format_exception(exc))]
    for part in _secret_parts(req.rescue_password):
        for text in shown:
            assert part not in text


def test_plaintext_refused_under_require_hashed_never_contains_it(conf,
                                                                  step):
    configure(conf, require_hashed=True)

    exc = refusal(step, request(PASSWORD))

    assert PASSWORD not in str(exc)
    assert PASSWORD not in repr(exc)
