"""The programs the network package runs: starting a DHCP client with its
output in a log, and whether one still runs.

A DHCP client's daemon is usually no child of the worker (dhclient forks
into a session of its own, a udhcpc may be a previous worker's), so there
is nothing to wait() on: its ``/proc/<pid>/stat`` is read instead.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping
from collections.abc import Sequence

#: ``/proc/<pid>/stat`` states of a process that has ended: a zombie
#: (not yet reaped) or dead
ENDED_STATES = frozenset({'Z', 'X'})

#: seconds between two looks at a process that is to end
POLL_INTERVAL = 0.02


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
                 env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Start ``argv`` in a session of its own, its output appended to
    ``log_path`` after a line with the time and the command line.

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
                                start_new_session=True, env=env)
