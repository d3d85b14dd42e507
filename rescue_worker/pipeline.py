"""The provisioning pipeline: the Step interface and the ordered, timed run.

Steps know nothing of messaging. A step gets the request and a shared
``RescueState`` that earlier steps filled in (the password step leaves the
hash there for the account step), and either returns a short detail string or
raises ``RescueError`` with the code the conductor should see.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import time
from collections.abc import Sequence

from oslo_config import cfg
from stevedore import driver as stevedore_driver
from stevedore import exception as stevedore_exception

from rescue_worker import errors
from rescue_worker import payloads

LOG = logging.getLogger(__name__)

STEP_NAMESPACE = 'rescue_worker.steps'

# The step statuses (their home is payloads; kept here for step authors).
DONE = payloads.STEP_DONE
FAILED = payloads.STEP_FAILED
SKIPPED = payloads.STEP_SKIPPED

StepReport = payloads.StepReport


@dataclasses.dataclass(frozen=True)
class RescueRequest:
    """One ``finalize_rescue`` request that passed the argument checks."""

    request_id: str
    # repr=False: a request is logged and put in exceptions by generic code;
    # the secret must never ride along.
    rescue_password: str = dataclasses.field(repr=False)
    hashed: bool = False
    #: the plaintext's hash, once the password step's check made it
    password_hash: str | None = dataclasses.field(default=None, repr=False)

    def journal_data(self) -> dict:
        """What the journal keeps so that a crash can run it again: the
        hash, never the plaintext (the disk outlives the request)."""
        if self.password_hash is not None:
            return {'rescue_password': self.password_hash, 'hashed': True}
        if not self.hashed:
            raise ValueError('a plaintext password must be hashed before '
                             'it is journaled')
        return {'rescue_password': self.rescue_password, 'hashed': True}

    @classmethod
    def from_journal(cls, request_id: str, data: dict) -> RescueRequest:
        return cls(request_id=request_id,
                   rescue_password=data['rescue_password'],
                   hashed=data['hashed'])


@dataclasses.dataclass
class RescueState:
    """What the steps of one run learn and hand on to the next ones."""

    username: str
    hash_scheme: str | None = None
    password_hash: str | None = dataclasses.field(default=None, repr=False)
    interfaces: list[payloads.InterfaceReport] = dataclasses.field(
        default_factory=list)


@dataclasses.dataclass
class PipelineResult:
    state: RescueState
    steps: list[StepReport]
    error: errors.RescueError | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None


class Step(abc.ABC):
    """One provisioning step, registered under ``rescue_worker.steps``."""

    #: the name used in ``[rescue_worker] steps`` and in reports
    name: str = ''

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf

    def check(self, request: RescueRequest) -> RescueRequest | None:
        """Refuse a request this step could never carry out.

        Called for every step before the request is journaled, so it must be
        pure: no I/O, no state. Raise ``RescueError`` to refuse. Return a
        request to hand on instead of ``request`` (the password step
        returns it hashed, so that no plaintext reaches the journal), or
        None to keep it.
        """
        return None

    @abc.abstractmethod
    def run(self, request: RescueRequest, state: RescueState) -> str:
        """Do the work; return a short detail for the report."""


class Pipeline:
    """Runs the configured steps in order; stops at the first failure."""

    def __init__(self, steps: Sequence[Step], username: str) -> None:
        self.steps = list(steps)
        self.username = username

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> Pipeline:
        steps = [load_step(name, conf) for name in conf.rescue_worker.steps]
        return cls(steps, conf.rescue_worker.username)

    @property
    def step_names(self) -> list[str]:
        return [step.name for step in self.steps]

    def check(self, request: RescueRequest) -> RescueRequest:
        """Every step's ``check``; the request to journal and run."""
        for step in self.steps:
            request = step.check(request) or request
        if not request.hashed and request.password_hash is None:
            # Only a hash may reach the journal, and no step made one.
            raise errors.RescueError(
                errors.PLAINTEXT_REFUSED,
                'no step of this node hashes a plaintext password; send '
                'it hashed (hashed=true), or add "password" to '
                '[rescue_worker] steps on the node')
        return request

    def run(self, request: RescueRequest) -> PipelineResult:
        state = RescueState(username=self.username)
        reports: list[StepReport] = []
        error = None
        for step in self.steps:
            if error is not None:
                reports.append(StepReport(step.name, SKIPPED, 0.0))
                continue
            started = time.monotonic()
            try:
                detail = step.run(request, state) or ''
                status = DONE
            except errors.RescueError as exc:
                error, status, detail = exc, FAILED, exc.message
            except Exception as exc:
                # The message of an unexpected exception is not ours to
                # vet, so it stays out of the notification and the log;
                # the traceback alone shows where it came from.
                LOG.error('Step %s of request %s failed unexpectedly '
                          '(%s)', step.name, request.request_id,
                          type(exc).__name__,
                          exc_info=(type(exc), None, exc.__traceback__))
                error = errors.RescueError(
                    errors.INTERNAL,
                    'step %s failed unexpectedly (%s); the worker log on '
                    'the node has the traceback' %
                    (step.name, type(exc).__name__))
                status, detail = FAILED, error.message
            elapsed = (time.monotonic() - started) * 1000.0
            reports.append(StepReport(step.name, status, elapsed, detail))
            LOG.info('Request %s: step %s %s in %.1f ms',
                     request.request_id, step.name, status, elapsed)
        return PipelineResult(state, reports, error)


def load_step(name: str, conf: cfg.ConfigOpts) -> Step:
    """Instantiate the step registered as ``name``."""
    try:
        mgr = stevedore_driver.DriverManager(
            STEP_NAMESPACE, name, invoke_on_load=True, invoke_args=(conf,))
    except stevedore_exception.NoMatches:
        raise errors.ConfigurationError(
            'Unknown step %r in [rescue_worker] steps: no entry point of '
            'that name in namespace %s. Install the package that provides '
            'it or remove it from the list.' % (name, STEP_NAMESPACE)
        ) from None
    except errors.ConfigurationError:
        # The step's own message (a DHCP backend it cannot load, say)
        # already says what to fix.
        raise
    except Exception as exc:
        raise errors.ConfigurationError(
            'Step %r in [rescue_worker] steps failed to load (%s: %s); '
            'check the installation of the package that provides it.' %
            (name, type(exc).__name__, exc)) from exc
    return mgr.driver
