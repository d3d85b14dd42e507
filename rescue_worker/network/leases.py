"""Reading ISC dhclient lease files (``dhclient.leases(5)``).

dhclient appends a ``lease { ... }`` block each time it binds (and when it
releases: a copy whose ``expire`` is the time of release), and rewrites the
file on start with the lease it is using last. So the last block of an
interface is its newest lease. ``dhclient -6`` does the same with
``lease6 { ... }`` blocks, whose addresses (``iaaddr``) carry their start
and lifetime instead.
"""

from __future__ import annotations

import calendar
import contextlib
import dataclasses
import pathlib
import re
import time
from collections.abc import Iterator
from collections.abc import Sequence
from typing import TypeVar


@dataclasses.dataclass(frozen=True)
class Lease:
    interface: str | None
    address: str | None
    #: ``option dhcp-server-identifier``: the server that granted it
    server: str | None
    #: end of the lease (seconds since the epoch); None for ``never`` or
    #: when the file does not say
    expire: float | None

    def expired(self, now: float) -> bool:
        return self.expire is not None and self.expire <= now


#: one token of a lease file: a quoted string (its quotes kept; a
#: backslash escapes the next character), a brace, a semicolon or a word;
#: white space and comments match too, without a token, and are passed over
_TOKEN = re.compile(r"""
      \s+
    | \#[^\n]*
    | (?P<token> [{};]
               | "(?:\\[\s\S]?|[^"\\])*"?
               | [^\s{};"\#]+ )
""", re.VERBOSE)


def _tokens(text: str) -> Iterator[str]:
    """Words, quoted strings (with their quotes), '{', '}' and ';'."""
    for match in _TOKEN.finditer(text):
        if match.group('token'):
            yield match.group('token')


def _statements(tokens: Iterator[str]) -> Iterator[list[str] | tuple]:
    """Statements of one block level: a list of words, or a tuple
    (words, nested statements) for a block; stops at the closing '}'."""
    words: list[str] = []
    for token in tokens:
        if token == ';':
            if words:
                yield words
            words = []
        elif token == '{':
            yield (words, list(_statements(tokens)))
            words = []
        elif token == '}':
            break
        else:
            words.append(token)


def _unquote(word: str) -> str:
    if len(word) >= 2 and word[0] == word[-1] == '"':
        return word[1:-1]
    return word


def _parse_time(words: list[str]) -> float | None:
    """``4 2024/01/31 10:00:00`` (UTC), ``epoch 1706695200`` or ``never``."""
    try:
        if words[0] == 'epoch':
            return float(words[1])
        if words[0] == 'never':
            return None
        parsed = time.strptime('%s %s' % (words[1], words[2]),
                               '%Y/%m/%d %H:%M:%S')
        return float(calendar.timegm(parsed))
    except (IndexError, ValueError):
        return None


def _blocks(text: str, keyword: str) -> Iterator[list]:
    """The statements inside each top-level ``<keyword> { ... }``."""
    for statement in _statements(_tokens(text)):
        if isinstance(statement, tuple) and statement[0] == [keyword]:
            yield statement[1]


def _settings(statements: list) -> dict[str, list[str]]:
    """The simple statements of a block (nested blocks left out): the
    first word (``option <name>`` for an option) -> the words after it.
    The last of the same key counts; one without a value is malformed and
    passed over."""
    settings = {}
    for words in statements:
        if isinstance(words, tuple):
            continue
        key, value = words[0], words[1:]
        if key == 'option':
            key, value = ' '.join(words[:2]), words[2:]
        if value:
            settings[key] = value
    return settings


def _value(settings: dict[str, list[str]], key: str) -> str | None:
    words = settings.get(key)
    return words[0] if words else None


def _interface(settings: dict[str, list[str]]) -> str | None:
    name = _value(settings, 'interface')
    return None if name is None else _unquote(name)


def parse(text: str) -> list[Lease]:
    """Every IPv4 ``lease`` block of ``text``, in file order."""
    found = []
    for block in _blocks(text, 'lease'):
        settings = _settings(block)
        found.append(Lease(
            interface=_interface(settings),
            address=_value(settings, 'fixed-address'),
            server=_value(settings, 'option dhcp-server-identifier'),
            expire=_parse_time(settings.get('expire', []))))
    return found


def _text(path: str) -> str:
    """The file's text; empty when it does not exist (no lease yet)."""
    with contextlib.suppress(FileNotFoundError):
        return pathlib.Path(path).read_text(encoding='utf-8',
                                            errors='replace')
    return ''


def read(path: str) -> list[Lease]:
    """The leases of the file at ``path``; none when it does not exist."""
    return parse(_text(path))


def newest(path: str, interface: str,
           now: float | None = None) -> Lease | None:
    """The newest lease of ``interface`` in the file, if not expired.

    A released lease is recorded with its expiry set to the time of
    release, so after a release there is none.
    """
    return _newest(read(path), interface, now)


def expire_newest(path: str, interface: str,
                  now: float | None = None) -> bool:
    """Append a copy of the newest lease of ``interface`` that expired
    ``now``, as ``dhclient -r`` records a released lease; whether there
    was one to copy.

    dhclient started on the file then knows the lease (the address its
    script replaces) but asks for it no more: it discovers at once.
    """
    text = _text(path)
    blocks = [text[start:end] for start, end in _block_spans(text, 'lease')
              if _interface(_settings(next(_blocks(text[start:end],
                                                   'lease')))) in (
                  None, interface)]
    if not blocks:
        return False
    when = 'expire %s;' % time.strftime(
        '%w %Y/%m/%d %H:%M:%S', time.gmtime(time.time() if now is None
                                            else now))
    block, count = _EXPIRE.subn(when, blocks[-1])
    if not count:
        block = block[:-1].rstrip() + '\n  %s\n}' % when
    with open(path, 'a', encoding='utf-8') as f:
        f.write('%s%s\n' % ('' if text.endswith('\n') or not text else '\n',
                            block))
    return True


#: the ``expire`` statement of a lease block
_EXPIRE = re.compile(r'\bexpire\s[^;{}"]*;')


def _tokens_with_depth(text: str) -> Iterator[tuple[str, int, int, int]]:
    """Each token of ``text``: itself, where it starts and ends, and how
    deep in braces it stands."""
    depth = 0
    for match in _TOKEN.finditer(text):
        token = match.group('token')
        if not token:
            continue
        yield token, match.start('token'), match.end(), depth
        if token == '{':
            depth += 1
        elif token == '}' and depth:
            depth -= 1


def _block_spans(text: str, keyword: str) -> Iterator[tuple[int, int]]:
    """Where each top-level ``<keyword> { ... }`` of ``text`` starts and
    ends."""
    start = None
    previous: tuple[str, int] | None = None
    for token, begin, end, depth in _tokens_with_depth(text):
        if token == '{' and depth == 0 and previous is not None and \
                previous[0] == keyword:
            start = previous[1]
        elif token == '}' and depth == 1 and start is not None:
            yield start, end
            start = None
        previous = (token, begin)


@dataclasses.dataclass(frozen=True)
class Lease6:
    interface: str | None
    #: the ``iaaddr`` of its ``ia-na`` blocks
    addresses: tuple[str, ...]
    #: ``option dhcp6.server-id``: the DUID of the server that granted it
    server: str | None
    #: when the last of its addresses ends (``starts`` + ``max-life``);
    #: None when the file does not say
    expire: float | None

    def expired(self, now: float) -> bool:
        return self.expire is not None and self.expire <= now


def _number(words: list[str]) -> float | None:
    try:
        return float(words[0])
    except (IndexError, ValueError):
        return None


def parse6(text: str) -> list[Lease6]:
    """Every ``lease6`` block of ``text``, in file order."""
    found = []
    for block in _blocks(text, 'lease6'):
        settings = _settings(block)
        addresses: list[str] = []
        ends: list[float] = []
        for words, nested in _nested(block):
            if words and words[0] in ('ia-na', 'ia-ta'):
                _collect_addresses(nested, addresses, ends)
        found.append(Lease6(
            interface=_interface(settings),
            addresses=tuple(addresses),
            server=_value(settings, 'option dhcp6.server-id'),
            expire=max(ends) if ends else None))
    return found


def _nested(statements: list) -> Iterator[tuple[list[str], list]]:
    """The nested blocks of a block: (words before the brace, statements)."""
    return (statement for statement in statements
            if isinstance(statement, tuple))


def _collect_addresses(statements: list, addresses: list[str],
                       ends: list[float]) -> None:
    for words, nested in _nested(statements):
        if len(words) < 2 or words[0] != 'iaaddr':
            continue
        addresses.append(words[1])
        settings = _settings(nested)
        starts = _number(settings.get('starts', []))
        life = _number(settings.get('max-life', []))
        if starts is not None and life is not None:
            ends.append(starts + life)


def read6(path: str) -> list[Lease6]:
    """The DHCPv6 leases of the file at ``path``; none when it does not
    exist."""
    return parse6(_text(path))


def newest6(path: str, interface: str,
            now: float | None = None) -> Lease6 | None:
    """The newest DHCPv6 lease of ``interface`` in the file, if not
    expired."""
    return _newest(read6(path), interface, now)


AnyLease = TypeVar('AnyLease', Lease, Lease6)


def _newest(found: Sequence[AnyLease], interface: str,
            now: float | None) -> AnyLease | None:
    """The last of ``found`` for ``interface`` (or for no interface in
    particular), unless it has expired."""
    candidates = [lease for lease in found
                  if lease.interface in (None, interface)]
    if not candidates:
        return None
    lease = candidates[-1]
    if lease.expired(time.time() if now is None else now):
        return None
    return lease
