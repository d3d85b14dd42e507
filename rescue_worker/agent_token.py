"""The node token: where it comes from and how a request's token is checked.

Anyone who can publish to the broker can reach the worker's queue, so every
request carries the node's token. It is loaded once at start and compared
in constant time.
"""

from __future__ import annotations

import hmac
import logging
import os
import stat

from oslo_config import cfg

from rescue_worker import boot
from rescue_worker import errors

LOG = logging.getLogger(__name__)

MIN_LENGTH = 32
CMDLINE_KEY = boot.TOKEN
PROC_CMDLINE = boot.PROC_CMDLINE


def _read_token_file(path: str) -> str:
    try:
        # O_NONBLOCK: a FIFO put in the token's place must not hold the
        # start for ever; it is refused below like any other non-file.
        # The mode is checked on the file actually read, not on the path.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY
                     | os.O_CLOEXEC)
        with open(fd, 'rb') as f:
            mode = os.fstat(f.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise errors.ConfigurationError(
                    'Token file %s is not a regular file.' % path)
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise errors.ConfigurationError(
                    'Token file %s has mode %o: it must not be accessible '
                    'to group or others. Run "chmod 600 %s".' % (
                        path, stat.S_IMODE(mode), path))
            return f.read().decode('utf-8').strip()
    except OSError as exc:
        raise errors.ConfigurationError(
            'Token file %s cannot be read (%s).' % (path, exc.strerror)
        ) from None
    except UnicodeDecodeError:
        raise errors.ConfigurationError(
            'Token file %s is not UTF-8 text; write the token as a single '
            'line, e.g. from "openssl rand -hex 32".' % path) from None


def _read_cmdline(path: str) -> str | None:
    return boot.parameters(path).get(CMDLINE_KEY)


def load_token(conf: cfg.ConfigOpts,
               cmdline_path: str = PROC_CMDLINE) -> str | None:
    """Return the node token, or None when running unauthenticated.

    Raises ``ConfigurationError`` when the worker must not start: a token
    file others can read, a token that is too short, or no token at all
    without ``allow_unauthenticated``.
    """
    group = conf.rescue_worker
    path = group.agent_token_file
    source = None
    token = None
    if path and os.path.exists(path):
        token, source = _read_token_file(path), path
    else:
        token = _read_cmdline(cmdline_path)
        source = '%s (%s=)' % (cmdline_path, CMDLINE_KEY)
    if token is not None and len(token) < MIN_LENGTH:
        raise errors.ConfigurationError(
            'The agent token from %s has %d characters; at least %d are '
            'required. Generate one with "openssl rand -hex 32".' % (
                source, len(token), MIN_LENGTH))
    if not token:
        if group.allow_unauthenticated:
            LOG.warning('No agent token found and allow_unauthenticated is '
                        'set: ANYONE WHO CAN PUBLISH TO THE BROKER CAN SET '
                        'THE RESCUE PASSWORD OF THIS NODE.')
            return None
        raise errors.ConfigurationError(
            'No agent token: %s does not exist and the kernel command line '
            'has no %s=. Write the token to that file (mode 0600), or set '
            '[rescue_worker] allow_unauthenticated = true for a closed test '
            'set-up.' % (path, CMDLINE_KEY))
    LOG.info('Agent token loaded from %s', source)
    return token


class TokenCheck:
    """Checks the ``agent_token`` argument of each request."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode('utf-8') if token is not None else None

    @property
    def required(self) -> bool:
        return self._token is not None

    def verify(self, candidate: object) -> None:
        if self._token is None:
            return
        if not isinstance(candidate, str):
            raise errors.RescueError(
                errors.UNAUTHORIZED,
                'agent_token is missing or not a string; send the token of '
                'this node (the conductor has it from the node record).')
        if not hmac.compare_digest(candidate.encode('utf-8', 'replace'),
                                   self._token):
            raise errors.RescueError(
                errors.UNAUTHORIZED,
                'agent_token does not match this node\'s token; check that '
                'the conductor casts to the right node and holds its '
                'current token.')

    def __repr__(self) -> str:
        return '<TokenCheck required=%s>' % self.required
