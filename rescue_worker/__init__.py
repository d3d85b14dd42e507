"""rescue-worker: the bare-metal rescue agent as an oslo.messaging worker.

The public API for conductors and tests is here; the modules behind it are
free to move. Names are imported on first use, so that importing a step
(pure code) does not import oslo.messaging. ``rescue_worker.fixture`` (test
fixtures) is imported on its own, as it needs the ``fixtures`` package.
"""

import importlib

_PUBLIC = {
    'CompletionWaiter': 'rescue_worker.client',
    'Outcome': 'rescue_worker.client',
    'RescueWorkerClient': 'rescue_worker.client',
    'WorkerNotListening': 'rescue_worker.client',
    'RescueError': 'rescue_worker.errors',
    'RescueWorker': 'rescue_worker.service',
    'version_string': 'rescue_worker.version',
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    try:
        module = _PUBLIC[name]
    except KeyError:
        raise AttributeError('module %r has no attribute %r' %
                             (__name__, name)) from None
    return getattr(importlib.import_module(module), name)
