"""rescue-worker --help says what the daemon is and where its options are
described."""

import os
import subprocess
import sys

from rescue_worker import service
from rescue_worker.cmd import worker as worker_cmd

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
WORKER = os.path.join(os.path.dirname(sys.executable), 'rescue-worker')
SAMPLE = 'etc/rescue-worker/rescue-worker.conf.sample'


def _help():
    result = subprocess.run([WORKER, '--help'], capture_output=True,
                            text=True, timeout=60,
                            env=dict(os.environ, COLUMNS='80'))
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_help_says_what_the_worker_is():
    text = ' '.join(_help().split())

    assert 'The rescue agent of a bare-metal node, run inside its rescue ' \
        'ramdisk: an oslo.messaging worker' in text


def test_help_points_at_the_sample_configuration_and_its_generator():
    # Wrapped lines may break a path at a hyphen: compare without blanks.
    text = ''.join(_help().split())

    assert SAMPLE in text
    assert os.path.isfile(os.path.join(REPO, SAMPLE))
    assert 'oslo-config-generator--namespacerescue_worker' in text


def test_help_lists_the_exit_statuses():
    text = ' '.join(_help().split())
    assert (worker_cmd.EXIT_CONFIG, worker_cmd.EXIT_SHUTDOWN_TIMEOUT,
            service.EXIT_OUTCOME_UNPUBLISHED) == (2, 3, 4)

    for said in ('0 after a rescue or SIGTERM',
                 '2 when the configuration or the token cannot be used',
                 '3 when SIGTERM gave up on a running request',
                 '4 when SIGTERM came while an outcome was still '
                 'unpublished'):
        assert said in text
