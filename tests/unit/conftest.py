"""Set-up shared by every unit test."""

import warnings

import pytest

with warnings.catch_warnings():
    # futurist imports eventlet, which warns that it is deprecated; the
    # package's own imports silence that (rescue_worker/cmd/__init__.py),
    # but this one comes first.
    warnings.filterwarnings('ignore', message=r'\s*Eventlet is deprecated')
    from futurist import _thread as futurist_thread


@pytest.fixture(autouse=True, scope='session')
def executor_threads_stop_quickly():
    """Let oslo.messaging's executor threads notice a stop within 50 ms.

    An RPC server or notification listener on the threading executor stops
    by shutting down a futurist pool, whose idle threads look whether they
    must stop only each time their wait for work times out: every
    ``MAX_IDLE_FOR`` (1 s). Each ``RescueWorkerFixture`` and
    ``NotificationCapture`` that a test stops so waited up to a second,
    about a third of the unit suite's time. Only that wait changes: work
    still reaches an idle thread at once, and a stop still waits for every
    thread. (If futurist renames the attribute, this fails loudly rather
    than leave the suite slow without a word.)
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(futurist_thread.ThreadWorker, 'MAX_IDLE_FOR', 0.05)
        yield
