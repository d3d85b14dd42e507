"""The password step: turn ``rescue_password`` into a crypt hash for shadow.

A plaintext password is hashed with passlib (``[rescue_worker] hash_scheme``);
a pre-hashed one (``hashed=True``) is identified, refused when weak, not
accepted on this node or malformed, and passed on unchanged. The result goes
to ``RescueState.password_hash`` / ``hash_scheme`` for the account step.

The module-level functions are pure (no I/O, no configuration), so the
conductor-side client can use them to hash or vet a password before sending
it. Every ``RescueError`` they raise says what to fix and never contains the
password, the hash or any part of them; passlib's own exceptions (whose
messages may quote the value) are never chained to it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

from rescue_worker import conf as rw_conf
from rescue_worker import errors
from rescue_worker import pipeline

with warnings.catch_warnings():
    # passlib 1.7.4 imports the stdlib ``crypt`` module (for its os_crypt
    # backend), which is deprecated since Python 3.11; nothing to act on.
    warnings.filterwarnings('ignore', message=r".*'crypt' is deprecated",
                            category=DeprecationWarning)
    from passlib import exc as passlib_exc
    from passlib import registry as passlib_registry

# passlib 1.7.4 reads ``bcrypt.__about__.__version__``, which bcrypt 4.x no
# longer has, and logs the AttributeError with a traceback at WARNING level
# ("(trapped) error reading bcrypt version") the first time bcrypt is used.
# It is harmless: only the version string for passlib's diagnostics is lost.
logging.getLogger('passlib.handlers.bcrypt').setLevel(logging.ERROR)

#: longest password (characters) and hash accepted, as in the contract
MAX_LENGTH = 4096

#: schemes a node may hash with or accept (``[rescue_worker]`` options)
SUPPORTED_SCHEMES: tuple[str, ...] = tuple(rw_conf.HASH_SCHEMES)

_WEAK = 'a weak scheme that is never accepted'
_LEGACY = 'a legacy scheme that is never accepted'
_FOREIGN = 'not a crypt(3) format, so it is never accepted'
_UNCHECKABLE = 'which passlib cannot check, so it is never accepted'
_NOT_HERE = ('which this node does not accept ([rescue_worker] '
             'accepted_hash_schemes)')

# Every scheme passlib can recognise that someone might plausibly send, in
# identification order (des_crypt before bigcrypt: a 13-character DES hash
# matches both), so that a weak or foreign hash is named as such instead of
# being called garbage: name -> (description, why it is refused; None for
# the supported schemes, which are refused only when not accepted here).
_KNOWN_SCHEMES: dict[str, tuple[str, str | None]] = {
    'sha512_crypt': ('sha512_crypt ($6$)', None),
    'sha256_crypt': ('sha256_crypt ($5$)', None),
    'bcrypt': ('bcrypt ($2b$, $2a$, $2y$)', None),
    'bcrypt_sha256': ("passlib's bcrypt_sha256", _FOREIGN),
    'argon2': ('argon2', _FOREIGN),
    'scrypt': ("passlib's scrypt ($scrypt$)", _FOREIGN),
    'sha1_crypt': ('NetBSD sha1_crypt ($sha1$)', _LEGACY),
    'md5_crypt': ('MD5-crypt ($1$)', _WEAK),
    'apr_md5_crypt': ('Apache MD5-crypt ($apr1$)', _WEAK),
    'sun_md5_crypt': ('Sun MD5-crypt ($md5$)', _WEAK),
    'bsd_nthash': ('the FreeBSD NT hash ($3$)', _WEAK),
    'bsdi_crypt': ('BSDi extended DES crypt', _WEAK),
    'des_crypt': ('traditional DES crypt', _WEAK),
    'bigcrypt': ('bigcrypt (DES based)', _WEAK),
}

# Formats passlib 1.7.4 does not know but that current tools produce, by
# their fixed prefix; named so that the operator knows what went wrong.
_UNSUPPORTED_PREFIXES: tuple[tuple[str, str], ...] = (
    ('$y$', 'yescrypt ($y$, the default of recent mkpasswd and chpasswd)'),
    ('$gy$', 'gost-yescrypt ($gy$)'),
    ('$7$', 'scrypt ($7$)'),
)

_TOOLS = {
    'sha512_crypt': 'mkpasswd -m sha-512',
    'sha256_crypt': 'mkpasswd -m sha-256',
    'bcrypt': 'mkpasswd -m bcrypt',
}

_HANDLERS = {name: passlib_registry.get_crypt_handler(name)
             for name in _KNOWN_SCHEMES}


def hash_password(plaintext: str, scheme: str,
                  rounds: int | None = None) -> str:
    """Hash ``plaintext`` with the passlib ``scheme``; return the crypt hash.

    ``scheme`` is one of ``SUPPORTED_SCHEMES``; ``rounds`` overrides
    passlib's default cost (``None`` keeps it; tests use a low value).
    The password is vetted with ``check_plaintext`` first, so an unusable
    one is refused with ``invalid_password`` instead of a passlib error.

    Note that bcrypt only uses the first 72 bytes (UTF-8) of a password,
    and that the cost of sha512_crypt and sha256_crypt grows with the
    password's length: a 4096-character one takes seconds at the default
    rounds.

    :raises ValueError: ``scheme`` is not supported (a programming error).
    :raises RescueError: ``invalid_password``.
    """
    if scheme not in SUPPORTED_SCHEMES:
        raise ValueError('unsupported hash scheme %r; use one of %s' %
                         (scheme, ', '.join(SUPPORTED_SCHEMES)))
    check_plaintext(plaintext, scheme)
    handler = _HANDLERS[scheme]
    if rounds is not None:
        handler = handler.using(rounds=rounds)
    return handler.hash(plaintext)


def check_plaintext(plaintext: str, scheme: str | None = None) -> None:
    """Refuse a plaintext password that cannot be hashed as it is.

    It must be 1 to ``MAX_LENGTH`` characters of text (no NUL, which
    crypt(3) cannot hash, and no lone surrogate, which is not text). When
    ``scheme`` is given, its own limits are checked too: passlib's bcrypt
    refuses more than 4096 bytes of UTF-8.

    :raises RescueError: ``invalid_password``; the message never contains
        the password.
    """
    problem = None
    if not plaintext:
        problem = 'the password is empty; send 1 to %d characters' % (
            MAX_LENGTH)
    elif len(plaintext) > MAX_LENGTH:
        problem = ('the password is longer than %d characters; send a '
                   'shorter one' % MAX_LENGTH)
    elif '\0' in plaintext:
        problem = ('the password contains a NUL character, which crypt(3) '
                   'cannot hash; remove it')
    elif any('\ud800' <= char <= '\udfff' for char in plaintext):
        problem = ('the password contains a lone surrogate code point, so '
                   'it is not valid text; send it as proper Unicode text '
                   '(UTF-8 on the wire)')
    elif (scheme == 'bcrypt' and
          len(plaintext.encode('utf-8')) > MAX_LENGTH):
        problem = ('the password is longer than %d bytes in UTF-8, which '
                   'the bcrypt hash scheme of this node cannot take (it '
                   'only uses the first 72 bytes anyway); send a shorter '
                   'one' % MAX_LENGTH)
    if problem is not None:
        raise errors.RescueError(errors.INVALID_PASSWORD, problem)


def identify_hash(value: str, accepted: Sequence[str]) -> str:
    """Return the scheme of the crypt hash ``value`` if it is acceptable.

    Acceptable means: 1 to ``MAX_LENGTH`` printable ASCII characters with no
    ``:`` (so it can never break a shadow line), recognised by passlib as
    one of ``accepted`` (a subset of ``SUPPORTED_SCHEMES``; weak schemes
    such as MD5-crypt and DES are never acceptable), and parsing cleanly:
    complete (not a bare salt), well-formed, and in canonical form.

    :raises ValueError: ``accepted`` names an unsupported scheme.
    :raises RescueError: ``invalid_hash``; the message says why and what to
        send instead, and never contains the value or any part of it.
    """
    allowed = _allowed(accepted)
    problem = _shape_problem(value)
    if problem is not None:
        raise errors.RescueError(
            errors.INVALID_HASH, '%s; %s' % (problem, _how_to_fix(allowed)))

    scheme = _identify(value)
    if scheme is None:
        unsupported = _unsupported_format(value)
        if unsupported is None:
            problem = 'the value is not a crypt hash of any known scheme'
        else:
            problem = 'the hash is %s, %s' % (unsupported, _UNCHECKABLE)
        raise errors.RescueError(
            errors.INVALID_HASH, '%s; %s' % (problem, _how_to_fix(allowed)))

    if scheme not in allowed:
        description, why = _KNOWN_SCHEMES[scheme]
        raise errors.RescueError(
            errors.INVALID_HASH, 'the hash is %s, %s; %s' % (
                description, why or _NOT_HERE, _how_to_fix(allowed)))

    if not _parses_cleanly(scheme, value):
        raise errors.RescueError(
            errors.INVALID_HASH,
            'the value looks like a %s hash but does not parse cleanly (it '
            'is incomplete, or its rounds, salt or checksum are malformed); '
            'send the complete hash exactly as produced, e.g. by passlib '
            '(passlib.hash.%s.hash) or `%s`' % (scheme, scheme,
                                                _TOOLS[scheme]))
    return scheme


class PasswordStep(pipeline.Step):
    """Hash the plaintext password, or vet the pre-hashed one.

    Leaves the hash in ``state.password_hash`` and its scheme in
    ``state.hash_scheme`` for the account step.
    """

    name = 'password'

    def check(self, request: pipeline.RescueRequest) -> None:
        """Refuse a password (or hash) that could never be used.

        Pure: reads the configuration only.
        """
        self._checked_scheme(request)

    def run(self, request: pipeline.RescueRequest,
            state: pipeline.RescueState) -> str:
        # Checking again is cheap and keeps run() safe on its own.
        scheme = self._checked_scheme(request)
        if request.hashed:
            state.password_hash = request.rescue_password
            state.hash_scheme = scheme
            return 'accepted a %s hash' % scheme
        state.password_hash = hash_password(request.rescue_password, scheme)
        state.hash_scheme = scheme
        return 'hashed with %s' % scheme

    def _checked_scheme(self, request: pipeline.RescueRequest) -> str:
        """The scheme the request's password is, or will be, hashed with."""
        opts = self.conf.rescue_worker
        if request.hashed:
            return identify_hash(request.rescue_password,
                                 opts.accepted_hash_schemes)
        if opts.require_hashed:
            raise errors.RescueError(
                errors.PLAINTEXT_REFUSED,
                'this node refuses plaintext passwords ([rescue_worker] '
                'require_hashed = true); send the password hashed, with '
                'hashed=True (%s), or unset require_hashed on the node' %
                _how_to_fix(_allowed(opts.accepted_hash_schemes)))
        check_plaintext(request.rescue_password, opts.hash_scheme)
        return opts.hash_scheme


# -- helpers -----------------------------------------------------------------

def _allowed(accepted: Sequence[str]) -> list[str]:
    """``accepted`` in order, without duplicates; refuse unknown names."""
    unknown = [name for name in accepted if name not in SUPPORTED_SCHEMES]
    if unknown:
        raise ValueError('unsupported accepted hash scheme(s) %s; use %s' %
                         (', '.join(map(repr, unknown)),
                          ', '.join(SUPPORTED_SCHEMES)))
    return list(dict.fromkeys(accepted))


def _join(names: Sequence[str]) -> str:
    """'a', 'a or b', 'a, b or c'."""
    if len(names) <= 1:
        return ''.join(names)
    return '%s or %s' % (', '.join(names[:-1]), names[-1])


def _how_to_fix(allowed: Sequence[str]) -> str:
    if not allowed:
        return ('this node accepts no hash scheme at all ([rescue_worker] '
                'accepted_hash_schemes is empty): send a plaintext password '
                'with hashed=False, or list schemes in accepted_hash_schemes')
    return 'send a %s hash, e.g. from passlib (passlib.hash.%s.hash) or ' \
        '`%s`' % (_join(allowed), allowed[0], _TOOLS[allowed[0]])


def _shape_problem(value: str) -> str | None:
    """What makes ``value`` unfit for a shadow line, or None.

    Names the kind of character only, never the character or its place.
    """
    if not value:
        return 'the hash is empty'
    if len(value) > MAX_LENGTH:
        return ('the hash is longer than %d characters, which no crypt '
                'scheme produces' % MAX_LENGTH)
    for char in value:
        if char == ':':
            return ("the hash contains ':', which would split its "
                    '/etc/shadow entry')
        if char in '\r\n':
            return 'the hash contains a line break'
        if char < ' ' or char == '\x7f':
            return 'the hash contains a control character'
        if char > '\x7f':
            return ('the hash contains a non-ASCII character; crypt hashes '
                    'are plain ASCII')
    return None


def _identify(value: str) -> str | None:
    """Name of the first known scheme passlib recognises ``value`` as."""
    for name, handler in _HANDLERS.items():
        recognised = False
        try:
            recognised = handler.identify(value)
        except Exception:
            # Whatever an odd value makes identify() do, it is not this.
            pass
        if recognised:
            return name
    return None


def _unsupported_format(value: str) -> str | None:
    """Description of a known format passlib cannot check, or None."""
    for prefix, description in _UNSUPPORTED_PREFIXES:
        if value.startswith(prefix):
            return description
    return None


def _parses_cleanly(scheme: str, value: str) -> bool:
    """Whether passlib parses ``value`` into a complete, canonical hash.

    Any passlib error is swallowed here and only a bool leaves, so that no
    exception quoting the value ends up as the ``__context__`` of the
    ``RescueError`` raised by the caller (``raise ... from None`` would
    hide it from tracebacks but still keep it on the exception).
    """
    handler = _HANDLERS[scheme]
    try:
        # bcrypt warns (and silently repairs) non-zero padding bits; the
        # round trip below refuses such a value, so the warning is noise.
        with warnings.catch_warnings(action='ignore',
                                     category=passlib_exc.PasslibHashWarning):
            parsed = handler.from_string(value)
            canonical = parsed.to_string()
    except Exception:
        return False
    # A bare salt ("$6$salt") parses, but has no checksum to log in with;
    # a non-canonical value (e.g. bcrypt padding bits) may be refused by
    # crypt(3) implementations, as it is by the bcrypt package.
    return bool(parsed.checksum) and canonical == value
