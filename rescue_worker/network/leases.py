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
import dataclasses
import time
from collections.abc import Iterator


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


def _tokens(text: str) -> Iterator[str]:
    """Words, quoted strings (with their quotes), '{', '}' and ';'."""
    i, length = 0, len(text)
    while i < length:
        char = text[i]
        if char.isspace():
            i += 1
        elif char == '#':
            end = text.find('\n', i)
            i = length if end < 0 else end + 1
        elif char in '{};':
            yield char
            i += 1
        elif char == '"':
            j = i + 1
            while j < length and text[j] != '"':
                j += 2 if text[j] == '\\' else 1
            yield text[i:j + 1]
            i = j + 1
        else:
            j = i
            while (j < length and not text[j].isspace() and
                   text[j] not in '{};"#'):
                j += 1
            yield text[i:j]
            i = j


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


def parse(text: str) -> list[Lease]:
    """Every IPv4 ``lease`` block of ``text``, in file order."""
    found = []
    for statement in _statements(_tokens(text)):
        if not (isinstance(statement, tuple) and statement[0] == ['lease']):
            continue
        fields: dict[str, str | float | None] = {}
        for inner in statement[1]:
            if isinstance(inner, tuple) or not inner:
                continue
            key = inner[0]
            if key == 'interface' and len(inner) > 1:
                fields['interface'] = _unquote(inner[1])
            elif key == 'fixed-address' and len(inner) > 1:
                fields['address'] = inner[1]
            elif (key == 'option' and len(inner) > 2 and
                  inner[1] == 'dhcp-server-identifier'):
                fields['server'] = inner[2]
            elif key == 'expire':
                fields['expire'] = _parse_time(inner[1:])
        found.append(Lease(
            interface=fields.get('interface'),
            address=fields.get('address'),
            server=fields.get('server'),
            expire=fields.get('expire')))
    return found


def _text(path: str) -> str:
    """The file's text; empty when it does not exist (no lease yet)."""
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            return f.read()
    except FileNotFoundError:
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
    candidates = [lease for lease in read(path)
                  if lease.interface in (None, interface)]
    if not candidates:
        return None
    lease = candidates[-1]
    if lease.expired(time.time() if now is None else now):
        return None
    return lease


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
    for statement in _statements(_tokens(text)):
        if not (isinstance(statement, tuple) and
                statement[0] == ['lease6']):
            continue
        interface = server = None
        addresses: list[str] = []
        ends: list[float] = []
        for inner in statement[1]:
            if isinstance(inner, tuple):
                words, nested = inner
                if words and words[0] in ('ia-na', 'ia-ta'):
                    _collect_addresses(nested, addresses, ends)
                continue
            if inner[0] == 'interface' and len(inner) > 1:
                interface = _unquote(inner[1])
            elif (inner[0] == 'option' and len(inner) > 2 and
                  inner[1] == 'dhcp6.server-id'):
                server = inner[2]
        found.append(Lease6(interface=interface, addresses=tuple(addresses),
                            server=server,
                            expire=max(ends) if ends else None))
    return found


def _collect_addresses(statements: list, addresses: list[str],
                       ends: list[float]) -> None:
    for inner in statements:
        if not (isinstance(inner, tuple) and len(inner[0]) > 1 and
                inner[0][0] == 'iaaddr'):
            continue
        addresses.append(inner[0][1])
        fields = {words[0]: words[1:] for words in inner[1]
                  if not isinstance(words, tuple) and words}
        starts = _number(fields.get('starts', []))
        life = _number(fields.get('max-life', []))
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
    candidates = [lease for lease in read6(path)
                  if lease.interface in (None, interface)]
    if not candidates:
        return None
    lease = candidates[-1]
    if lease.expired(time.time() if now is None else now):
        return None
    return lease
