"""Password hashes for ``/etc/shadow``: hash a plaintext password, identify
and vet a crypt hash, within caps on the hash cost.

The one place of the project that knows crypt schemes and passlib: the
worker's password step, the conductor-side client and ``rescue-worker-ctl``
hash and vet with these functions, so that what the conductor produces is
what the worker accepts.

Every function is pure (no I/O, no configuration): the caller passes what
the node is configured with. Every ``RescueError`` raised here says what to
fix and never contains the password, the hash or any part of them; passlib's
own exceptions (whose messages may quote the value) are never chained to it.

The cost caps exist because a crypt hash carries its own cost: a hash with
``rounds=999999999`` or a bcrypt cost of 31 is a valid hash that makes every
login (sshd, PAM, the verify step) hash for minutes, which is a denial of
service on the rescued node that no one can tell from a hang.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

from passlib import exc as passlib_exc
from passlib import registry as passlib_registry

from rescue_worker import errors

#: the schemes a node may hash with or accept, strongest first
#: (``[rescue_worker] hash_scheme`` and ``accepted_hash_schemes``)
HASH_SCHEMES: tuple[str, ...] = ('sha512_crypt', 'sha256_crypt', 'bcrypt')

#: what the worker and the client hash with unless told otherwise
DEFAULT_SCHEME = 'sha512_crypt'

#: longest password (characters) and hash accepted, as in the contract
MAX_LENGTH = 4096

SHA_CRYPT_SCHEMES = frozenset({'sha512_crypt', 'sha256_crypt'})

# The lowest costs passlib (and glibc) produce; a cap below them would
# refuse every hash of the scheme.
MIN_SHA_CRYPT_ROUNDS = 1000
MIN_BCRYPT_COST = 4


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


@dataclasses.dataclass(frozen=True)
class CostCaps:
    """The highest hash cost accepted: SHA-crypt ``rounds`` and the bcrypt
    cost (log2 of its rounds), as ``[rescue_worker] max_sha_crypt_rounds``
    and ``max_bcrypt_cost`` configure them on a node."""

    # The defaults stay well above passlib's own (656000 rounds for
    # sha512_crypt, 535000 for sha256_crypt, cost 12 for bcrypt), so that
    # a hash made by passlib, mkpasswd or this project's client always
    # passes, and well below what makes a login hang (1000000 rounds take
    # about 0.2 s on a current x86 core; each bcrypt cost step doubles
    # the time).
    sha_crypt_rounds: int = 1_000_000
    bcrypt_cost: int = 14

    def limit(self, scheme: str) -> int:
        """The cap of ``scheme``, in passlib's ``rounds`` of the scheme."""
        if scheme in SHA_CRYPT_SCHEMES:
            return self.sha_crypt_rounds
        return self.bcrypt_cost


#: the caps of a node that configures none
DEFAULT_CAPS = CostCaps()


# -- hashing -----------------------------------------------------------------

def hash_password(plaintext: str, scheme: str, rounds: int | None = None,
                  caps: CostCaps = DEFAULT_CAPS) -> str:
    """Hash ``plaintext`` with the passlib ``scheme``; return the crypt hash.

    ``rounds`` overrides the cost (``None``: ``default_rounds``; tests use
    a low value). The password is vetted with ``check_plaintext`` first,
    so an unusable one is refused with ``invalid_password`` instead of a
    passlib error.

    Note that bcrypt only uses the first 72 bytes (UTF-8) of a password,
    and that the cost of sha512_crypt and sha256_crypt grows with the
    password's length: a 4096-character one takes seconds at the default
    rounds.

    :raises ValueError: ``scheme`` is not supported, or ``rounds`` is above
        ``caps`` (a hash the worker would refuse): programming errors.
    :raises RescueError: ``invalid_password``.
    """
    check_cost(scheme, rounds, caps)
    check_plaintext(plaintext, scheme)
    if rounds is None:
        rounds = default_rounds(scheme, caps)
    return _HANDLERS[scheme].using(rounds=rounds).hash(plaintext)


def default_rounds(scheme: str, caps: CostCaps = DEFAULT_CAPS) -> int:
    """The cost ``hash_password`` uses by default: passlib's default for
    ``scheme``, or the cap where a node configures a lower one."""
    _check_scheme(scheme)
    return min(_HANDLERS[scheme].default_rounds, caps.limit(scheme))


def hash_backend(scheme: str) -> str:
    """The implementation passlib hashes ``scheme`` with (e.g. ``builtin``,
    ``bcrypt``), for reports of the hashing cost."""
    _check_scheme(scheme)
    return _HANDLERS[scheme].get_backend()


def check_cost(scheme: str, rounds: int | None,
               caps: CostCaps = DEFAULT_CAPS) -> None:
    """Refuse hashing settings that would produce a hash the worker refuses.

    For a conductor's settings (``RescueWorkerClient(hash_scheme=...,
    hash_rounds=...)``), checked before anything is hashed or sent.

    :raises ValueError: ``scheme`` is not supported, or ``rounds`` is above
        its cap in ``caps``.
    """
    _check_scheme(scheme)
    if rounds is not None and rounds > caps.limit(scheme):
        raise ValueError(
            '%s rounds of %d are above the cap of %d; a rescue worker '
            'would refuse the hash' % (scheme, rounds, caps.limit(scheme)))


def check_plaintext(plaintext: str, scheme: str | None = None) -> None:
    """Refuse a plaintext password that cannot be hashed as it is.

    It must be 1 to ``MAX_LENGTH`` characters of text (no NUL, which
    crypt(3) cannot hash, and no lone surrogate, which is not text). When
    ``scheme`` is given, its own limits are checked too: passlib's bcrypt
    refuses more than 4096 bytes of UTF-8.

    :raises RescueError: ``invalid_password``; the message never contains
        the password.
    """
    problem = _plaintext_problem(plaintext)
    if problem is None and scheme == 'bcrypt' and \
            len(plaintext.encode('utf-8')) > MAX_LENGTH:
        problem = ('the password is longer than %d bytes in UTF-8, which '
                   'the bcrypt hash scheme of this node cannot take (it '
                   'only uses the first 72 bytes anyway); send a shorter '
                   'one' % MAX_LENGTH)
    if problem is not None:
        raise errors.RescueError(errors.INVALID_PASSWORD, problem)


# -- vetting a hash ----------------------------------------------------------

def identify_hash(value: str, accepted: Sequence[str],
                  caps: CostCaps = DEFAULT_CAPS) -> str:
    """Return the scheme of the crypt hash ``value`` if it is acceptable.

    Acceptable means: 1 to ``MAX_LENGTH`` printable ASCII characters with no
    ``:`` (so it can never break a shadow line), recognised by passlib as
    one of ``accepted`` (a subset of ``HASH_SCHEMES``; weak schemes such as
    MD5-crypt and DES are never acceptable), parsing cleanly (complete, not
    a bare salt, well-formed, and in canonical form), and no costlier than
    ``caps`` allow.

    :raises ValueError: ``accepted`` names an unsupported scheme.
    :raises RescueError: ``invalid_hash``; the message says why and what to
        send instead, and never contains the value or any part of it.
    """
    allowed = _allowed(accepted)
    problem = _shape_problem(value)
    if problem is None:
        scheme = _identify(value)
        problem = _scheme_problem(scheme, value, allowed)
    if problem is not None:
        raise errors.RescueError(
            errors.INVALID_HASH, '%s; %s' % (problem, how_to_send(allowed)))
    parsed = _parsed(scheme, value)
    if parsed is None:
        raise errors.RescueError(
            errors.INVALID_HASH,
            'the value looks like a %s hash but does not parse cleanly (it '
            'is incomplete, or its rounds, salt or checksum are malformed); '
            'send the complete hash exactly as produced, e.g. by passlib '
            '(passlib.hash.%s.hash) or `%s`' % (scheme, scheme,
                                                _TOOLS[scheme]))
    if parsed.rounds > caps.limit(scheme):
        raise errors.RescueError(errors.INVALID_HASH,
                                 _over_cap(scheme, caps))
    return scheme


def how_to_send(accepted: Sequence[str]) -> str:
    """What to send instead, for an operator: the hash schemes of
    ``accepted`` and a tool that makes the first of them.

    :raises ValueError: ``accepted`` names an unsupported scheme.
    """
    allowed = _allowed(accepted)
    if not allowed:
        return ('this node accepts no hash scheme at all ([rescue_worker] '
                'accepted_hash_schemes is empty): send a plaintext password '
                'with hashed=False, or list schemes in accepted_hash_schemes')
    return 'send a %s hash, e.g. from passlib (passlib.hash.%s.hash) or ' \
        '`%s`' % (_join(allowed), allowed[0], _TOOLS[allowed[0]])


# -- verifying ---------------------------------------------------------------

def recognised_scheme(value: str) -> str | None:
    """The scheme of ``HASH_SCHEMES`` passlib recognises ``value`` as, by
    its form alone (nothing vetted); None for anything else."""
    scheme = _identify(value)
    return scheme if scheme in HASH_SCHEMES else None


def verify_password(plaintext: str, password_hash: str) -> bool | None:
    """Whether ``password_hash`` verifies ``plaintext``; None when it is no
    hash of a scheme of ``HASH_SCHEMES`` (locked, empty or malformed).

    Only a bool leaves: a passlib exception could quote the hash, and it
    must not become the context of an error raised by the caller.
    """
    scheme = recognised_scheme(password_hash)
    if scheme is None:
        return None
    try:
        return bool(_HANDLERS[scheme].verify(plaintext, password_hash))
    except Exception:
        return None


# -- helpers -----------------------------------------------------------------

def _check_scheme(scheme: str) -> None:
    if scheme not in HASH_SCHEMES:
        raise ValueError('unsupported hash scheme %r; use one of %s' %
                         (scheme, ', '.join(HASH_SCHEMES)))


def _allowed(accepted: Sequence[str]) -> list[str]:
    """``accepted`` in order, without duplicates; refuse unknown names."""
    unknown = [name for name in accepted if name not in HASH_SCHEMES]
    if unknown:
        raise ValueError('unsupported accepted hash scheme(s) %s; use %s' %
                         (', '.join(map(repr, unknown)),
                          ', '.join(HASH_SCHEMES)))
    return list(dict.fromkeys(accepted))


def _join(names: Sequence[str]) -> str:
    """'a', 'a or b', 'a, b or c'."""
    if len(names) <= 1:
        return ''.join(names)
    return '%s or %s' % (', '.join(names[:-1]), names[-1])


def _plaintext_problem(plaintext: str) -> str | None:
    """What makes ``plaintext`` unusable under any scheme, or None."""
    if not plaintext:
        return 'the password is empty; send 1 to %d characters' % MAX_LENGTH
    if len(plaintext) > MAX_LENGTH:
        return ('the password is longer than %d characters; send a shorter '
                'one' % MAX_LENGTH)
    if '\0' in plaintext:
        return ('the password contains a NUL character, which crypt(3) '
                'cannot hash; remove it')
    if any('\ud800' <= char <= '\udfff' for char in plaintext):
        return ('the password contains a lone surrogate code point, so it '
                'is not valid text; send it as proper Unicode text (UTF-8 '
                'on the wire)')
    return None


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
        problem = _character_problem(char)
        if problem is not None:
            return problem
    return None


def _character_problem(char: str) -> str | None:
    if char == ':':
        return ("the hash contains ':', which would split its /etc/shadow "
                'entry')
    if char in '\r\n':
        return 'the hash contains a line break'
    if char < ' ' or char == '\x7f':
        return 'the hash contains a control character'
    if char > '\x7f':
        return ('the hash contains a non-ASCII character; crypt hashes are '
                'plain ASCII')
    return None


def _scheme_problem(scheme: str | None, value: str,
                    allowed: Sequence[str]) -> str | None:
    """Why a hash recognised as ``scheme`` (None: not recognised) is not
    acceptable here, or None."""
    if scheme is None:
        unsupported = _unsupported_format(value)
        if unsupported is None:
            return 'the value is not a crypt hash of any known scheme'
        return 'the hash is %s, %s' % (unsupported, _UNCHECKABLE)
    if scheme not in allowed:
        description, why = _KNOWN_SCHEMES[scheme]
        return 'the hash is %s, %s' % (description, why or _NOT_HERE)
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


def _parsed(scheme: str, value: str):
    """``value`` parsed by passlib when it is a complete, canonical hash
    (its ``rounds`` then give its cost), else None.

    Any passlib error is swallowed here and only the parsed hash or None
    leaves, so that no exception quoting the value ends up as the
    ``__context__`` of the ``RescueError`` raised by the caller (``raise
    ... from None`` would hide it from tracebacks but still keep it on the
    exception).
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
        return None
    # A bare salt ("$6$salt") parses, but has no checksum to log in with;
    # a non-canonical value (e.g. bcrypt padding bits) may be refused by
    # crypt(3) implementations, as it is by the bcrypt package.
    if not parsed.checksum or canonical != value:
        return None
    return parsed


def _over_cap(scheme: str, caps: CostCaps) -> str:
    """The refusal of a hash costlier than ``caps`` allow; it names the
    cap, never the hash's own cost, which is part of the hash."""
    cap = caps.limit(scheme)
    if scheme in SHA_CRYPT_SCHEMES:
        return ('the %s hash has more rounds than this node accepts (at '
                'most %d, [rescue_worker] max_sha_crypt_rounds), so every '
                'login with it would take too long; send a hash of %d '
                'rounds or less, or raise max_sha_crypt_rounds on the node'
                % (scheme, cap, cap))
    return ('the %s hash has a higher cost than this node accepts (at most '
            '%d, [rescue_worker] max_bcrypt_cost), so every login with it '
            'would take too long; send a hash of cost %d or less, or raise '
            'max_bcrypt_cost on the node' % (scheme, cap, cap))
