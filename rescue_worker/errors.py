"""The stable error codes of the wire contract, and the exception that carries
one.

A ``RescueError`` message is shown to operators as is (in the ``error``
notification and the conductor's logs), so it says what to fix and never
contains the password, the hash or the agent token.
"""

from __future__ import annotations

UNAUTHORIZED = 'unauthorized'
INVALID_REQUEST = 'invalid_request'
INVALID_PASSWORD = 'invalid_password'
INVALID_HASH = 'invalid_hash'
PLAINTEXT_REFUSED = 'plaintext_refused'
ACCOUNT_FAILED = 'account_failed'
NETWORK_FAILED = 'network_failed'
VERIFY_FAILED = 'verify_failed'
INTERNAL = 'internal'

CODES = frozenset({
    UNAUTHORIZED, INVALID_REQUEST, INVALID_PASSWORD, INVALID_HASH,
    PLAINTEXT_REFUSED, ACCOUNT_FAILED, NETWORK_FAILED, VERIFY_FAILED,
    INTERNAL,
})


class RescueError(Exception):
    """A request refused or failed, with a stable ``code`` (see ``CODES``)."""

    def __init__(self, code: str, message: str) -> None:
        if code not in CODES:
            raise ValueError('unknown rescue error code %r' % code)
        super().__init__(message)
        self.code = code
        self.message = message

    def as_dict(self) -> dict[str, str]:
        return {'code': self.code, 'message': self.message}


class ConfigurationError(Exception):
    """The worker cannot start as configured; the message says what to fix."""
