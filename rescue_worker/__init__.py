"""rescue-worker: the bare-metal rescue agent as an oslo.messaging worker.

Public API for conductors and tests; the modules behind it are free to move.
"""

from rescue_worker.errors import RescueError
from rescue_worker.version import version_string

__all__ = ['RescueError', 'version_string']
