"""Per-node broker users through the RabbitMQ management HTTP API.

Each node in rescue gets a user ``rw-<node uuid>`` with a fresh random
password and exactly the permissions of doc/source/broker-permissions.rst
(``rescue_worker.cmd.broker_user.recipe``), and loses it once the outcome is
in. The HTTP layer is one callable, so that tests can swap it for a fake
broker without a socket.
"""

from __future__ import annotations

import base64
import json
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from rescue_worker.cmd import broker_user

USER_PREFIX = broker_user.DEFAULT_PREFIX
#: user limits of the recipe (broker-permissions.rst)
USER_LIMITS = {'max-connections': 10, 'max-channels': 40}

#: (method, url, json body or None, (user, password), timeout)
#: -> (status, response body)
HTTP = Callable[[str, str, Any, tuple[str, str], float], tuple[int, bytes]]


class BrokerAdminError(Exception):
    """The management API refused or could not be reached.

    The message names the method, the path and the status, never the
    administrator's credentials nor the node user's password.
    """


def urllib_http(method: str, url: str, body: Any, auth: tuple[str, str],
                timeout: float) -> tuple[int, bytes]:
    """The default HTTP layer: the standard library, basic auth."""
    data = None if body is None else json.dumps(body).encode('utf-8')
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header('Content-Type', 'application/json')
    credentials = base64.b64encode(('%s:%s' % auth).encode('utf-8'))
    request.add_header('Authorization', 'Basic ' + credentials.decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def user_name(node_uuid: str) -> str:
    return broker_user.user_name(USER_PREFIX, node_uuid)


def generate_password() -> str:
    # URL-safe, so that it needs no escaping in the ramdisk's URL either.
    return secrets.token_urlsafe(32)


class BrokerAdmin:
    """Creates and deletes per-node users through the management API."""

    def __init__(self, management_url: str, vhost: str = '/',
                 exchange: str = broker_user.DEFAULT_EXCHANGE,
                 topic: str = broker_user.DEFAULT_TOPIC,
                 notification_topic: str =
                 broker_user.DEFAULT_NOTIFICATION_TOPIC,
                 timeout: float = 30, http: HTTP | None = None) -> None:
        parts = urllib.parse.urlsplit(management_url)
        if not parts.hostname or parts.username is None:
            # Do not echo the URL: it holds the administrator's password.
            raise BrokerAdminError(
                '[rescue_worker] management_url needs a host and an '
                'administrator\'s credentials in its userinfo '
                '(http://USER:PASSWORD@HOST:15672/)')
        self._auth = (urllib.parse.unquote(parts.username),
                      urllib.parse.unquote(parts.password or ''))
        netloc = parts.hostname
        if ':' in netloc:
            netloc = '[%s]' % netloc
        if parts.port:
            netloc += ':%d' % parts.port
        path = parts.path.rstrip('/')
        if not path.endswith('/api'):
            path += '/api'
        self.api = urllib.parse.urlunsplit((parts.scheme, netloc, path,
                                            '', ''))
        self.vhost = vhost
        self.exchange = exchange
        self.topic = topic
        self.notification_topic = notification_topic
        self.timeout = timeout
        self._http = http or urllib_http

    def _request(self, method: str, *path: str, body: Any = None,
                 ok: tuple[int, ...] = (200, 201, 204)) -> int:
        quoted = '/'.join(urllib.parse.quote(part, safe='') for part in path)
        try:
            status, _ = self._http(method, '%s/%s' % (self.api, quoted),
                                   body, self._auth, self.timeout)
        except OSError as exc:
            raise BrokerAdminError(
                'RabbitMQ management API at %s unreachable (%s /%s): %s' % (
                    self.api, method, quoted,
                    exc.__class__.__name__)) from None
        if status not in ok:
            raise BrokerAdminError(
                'RabbitMQ management API answered %s to %s /%s' % (
                    status, method, quoted))
        return status

    def create_node_user(self, node_uuid: str) -> tuple[str, str]:
        """Create (or reset) ``rw-<node>``; return (user, new password)."""
        user = user_name(node_uuid)
        password = generate_password()
        patterns = broker_user.recipe(
            node_uuid, exchange=self.exchange, topic=self.topic,
            notification_topics=(self.notification_topic,))
        # PUT replaces an existing user: a new rescue invalidates the
        # password of an earlier one. No tag: no management access.
        self._request('PUT', 'users', user,
                      body={'password': password, 'tags': ''})
        self._request('PUT', 'permissions', self.vhost, user,
                      body={'configure': patterns['configure'],
                            'write': patterns['write'],
                            'read': patterns['read']})
        self._request('PUT', 'topic-permissions', self.vhost, user,
                      body={'exchange': self.exchange,
                            'write': patterns['topic_write'],
                            'read': patterns['topic_read']})
        for name, value in USER_LIMITS.items():
            self._request('PUT', 'user-limits', user, name,
                          body={'value': value})
        return user, password

    def delete_node_user(self, node_uuid: str) -> None:
        """Delete ``rw-<node>``; a user already gone is fine."""
        self._request('DELETE', 'users', user_name(node_uuid),
                      ok=(200, 204, 404))
