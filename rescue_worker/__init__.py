"""rescue-worker: the bare-metal rescue agent as an oslo.messaging worker.

The public API for conductors and tests is here; the modules behind it are
free to move. ``rescue_worker.fixture`` (test fixtures) is imported on its
own, as it needs the ``fixtures`` package.
"""

from rescue_worker.client import CompletionWaiter
from rescue_worker.client import Outcome
from rescue_worker.client import RescueWorkerClient
from rescue_worker.client import WorkerNotListening
from rescue_worker.errors import RescueError
from rescue_worker.service import RescueWorker
from rescue_worker.version import version_string

__all__ = ['CompletionWaiter', 'Outcome', 'RescueError', 'RescueWorker',
           'RescueWorkerClient', 'WorkerNotListening', 'version_string']
