"""The programs the network package runs: the environment they get,
starting a DHCP client with its output in a log, and whether one still
runs.

Every program gets ``child_environment()``, never the worker's own: the
worker's environment may hold its configuration (``OS_DEFAULT__
TRANSPORT_URL``, the broker password in it), and a DHCP client outlives
the worker on a node the tenant owns, its ``/proc/<pid>/environ``
readable there.

A DHCP client's daemon is usually no child of the worker (dhclient forks
into a session of its own, a udhcpc may be a previous worker's), so there
is nothing to wait() on: its ``/proc/<pid>/stat`` is read instead.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence

#: ``/proc/<pid>/stat`` states of a process that has ended: a zombie
#: (not yet reaped) or dead
ENDED_STATES = frozenset({'Z', 'X'})

#: seconds between two looks at a process that is to end
POLL_INTERVAL = 0.02

#: the search path of a worker started without one
DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'


def child_environment(**extra: str) -> dict[str, str]:
    """The whole environment of a program the worker runs: the search
    path (the worker's, which found the program), the C locale (so that
    what scripts read from ``ip`` is in one language), and ``extra``.
    Nothing else of the worker's environment is passed on."""
    return {'PATH': os.environ.get('PATH') or DEFAULT_PATH,
            'LC_ALL': 'C',
            **extra}


def process_state(pid: int) -> str | None:
    """The state letter of ``pid`` (``R``, ``S``, ``Z``, ...), or None when
    there is no such process."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            stat = f.read()
    except OSError:
        return None
    # The command name, in parentheses, may itself hold ') ': the state
    # is the first field after the last one.
    _, closed, rest = stat.rpartition(')')
    fields = rest.split()
    return fields[0] if closed and fields else None


def has_ended(pid: int) -> bool:
    """Whether ``pid`` is gone, or a zombie."""
    state = process_state(pid)
    return state is None or state in ENDED_STATES


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` ended (or is a zombie); whether it did."""
    deadline = time.monotonic() + timeout
    while not has_ended(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)
    return True


def start_logged(argv: Sequence[str], log_path: str,
                 **extra_env: str) -> subprocess.Popen:
    """Start ``argv`` in a session of its own, its output appended to
    ``log_path`` after a line with the time and the command line, with
    ``child_environment(**extra_env)``.

    Its own session: a client that outlives the worker never gets the
    signals of the worker's process group, and one given up on is killed
    with whatever it runs (its lease script) by killing the session.
    """
    with open(log_path, 'ab') as log:
        log.write(('--- %s: %s\n' % (time.strftime('%Y-%m-%dT%H:%M:%S%z'),
                                     ' '.join(argv))).encode())
        log.flush()
        return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True,
                                env=child_environment(**extra_env))
