"""A boot interface for the Ironic integration tests only: ``rw-test-sandbox``.

It is registered through the dist-info next to this module, which the tests
put on Ironic's PYTHONPATH; nothing of it ships in the product.

``prepare_ramdisk(task, ramdisk_params)`` "boots" the node: it makes a
sandbox (``rescue_worker.sandbox.seed_root``: a small root with passwd,
shadow, group and sudoers) under ``$RW_IRONIC_TEST_SANDBOXES/<node uuid>``,
writes the parameters it was given, exactly, as a kernel command line to
``cmdline``, and starts a real ``rescue-worker`` with ``--kernel-cmdline``
pointing there. The worker's configuration file holds no node id, broker URL
or token: those come from the command line only, as in a real image.

``clean_up_ramdisk`` stops the worker, unless the node is finishing a
successful rescue: a rescued node keeps running its ramdisk, whose worker
exits by itself after its lockdown, so it is given time to do that.

Test-only knobs, in the node's ``driver_info``:

- ``rw_test_steps``: the worker's ``[rescue_worker] steps``;
- ``rw_test_foreign_rescue_user``: the sandbox's passwd already has a
  ``rescue`` user the worker did not create (its account step must fail);
- ``rw_test_no_worker``: nothing starts (a ramdisk that never boots);
- ``rw_test_durable_queues``: the worker's ``[oslo_messaging_rabbit]
  amqp_durable_queues`` (the conductors must have the same).
"""

import configparser
import os
import shutil
import signal
import subprocess
import sys
import time

from ironic.common import states
from ironic.drivers import base
from oslo_log import log

from rescue_worker import sandbox
from rescue_worker.network import processes

LOG = log.getLogger(__name__)

SANDBOXES_ENV = 'RW_IRONIC_TEST_SANDBOXES'
PLUGINS_DIR = os.path.dirname(os.path.abspath(__file__))
FOREIGN_RESCUE_USER = ('rescue:x:1000:1000:image maintainer:/home/rescue:'
                       '/bin/bash\n')
#: seconds a rescued node's worker gets to finish its lockdown and exit
LOCKDOWN_GRACE = 30.0
STOP_TIMEOUT = 30.0

# Workers started by this process, so that they can be reaped.
_CHILDREN: dict[int, subprocess.Popen] = {}


def sandbox_dir(node_uuid: str) -> str:
    return os.path.join(os.environ[SANDBOXES_ENV], node_uuid)


def _truthy(value) -> bool:
    return str(value).lower() in ('1', 'true', 'yes')


def _alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    # Started by an Ironic process before a restart: not our child; a
    # zombie waiting for its reaper is as good as gone.
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (OSError, IndexError):
        return False


def _runs_in(pid: int, base_dir: str) -> bool:
    """Whether ``pid`` is still the worker of ``base_dir``: after an Ironic
    restart the pid of one that exited may belong to another process."""
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            return base_dir + os.sep in f.read().decode(errors='replace')
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    ended = processes.wait_gone(pid, timeout)
    _alive(pid)  # reaps it, if it is a child of this process
    return ended


class SandboxBoot(base.BootInterface):
    """Boots a node by starting a rescue worker in a sandbox."""

    capabilities = ['pxe_boot']

    def get_properties(self):
        return {}

    def validate(self, task):
        pass

    def validate_rescue(self, task):
        pass

    def prepare_instance(self, task):
        pass

    def clean_up_instance(self, task):
        pass

    def prepare_ramdisk(self, task, ramdisk_params, mode='deploy'):
        node = task.node
        info = node.driver_info
        base_dir = sandbox_dir(node.uuid)
        # A fresh ramdisk for every boot; the previous one's logs are kept.
        if os.path.exists(base_dir):
            shutil.move(base_dir, '%s.%d' % (base_dir, time.time_ns()))
        root_dir = os.path.join(base_dir, 'root')
        os.makedirs(root_dir)
        sandbox.seed_root(root_dir)
        if _truthy(info.get('rw_test_foreign_rescue_user')):
            with open(os.path.join(root_dir, 'etc', 'passwd'), 'a') as f:
                f.write(FOREIGN_RESCUE_USER)
        # What the kernel would put in /proc/cmdline, in the order given.
        with open(os.path.join(base_dir, 'cmdline'), 'w') as f:
            f.write(' '.join('%s=%s' % item
                             for item in ramdisk_params.items()) + '\n')
        for fifo in ('entered', 'gate'):
            os.mkfifo(os.path.join(base_dir, fifo))
        config = configparser.ConfigParser(interpolation=None)
        config['DEFAULT'] = {
            'debug': 'true',
            'log_file': os.path.join(base_dir, 'rescue-worker.log'),
            # Every library at DEBUG: the tests look for secrets in the
            # most verbose log there can be.
            'default_log_levels': ','.join(
                '%s=DEBUG' % name for name in (
                    'amqp', 'kombu', 'oslo.messaging', 'oslo_messaging',
                    'stevedore', 'passlib', 'rescue_worker')),
        }
        config['rescue_worker'] = {
            'root_dir': root_dir,
            'state_dir': os.path.join(base_dir, 'state'),
            # Never created: the token must come from the command line.
            'agent_token_file': os.path.join(base_dir, 'no-token-file'),
            'dhcp_backend': 'none',
            'steps': info.get('rw_test_steps',
                              'password,account,network,verify'),
        }
        if _truthy(info.get('rw_test_durable_queues')):
            config['oslo_messaging_rabbit'] = {'amqp_durable_queues': 'true'}
        config_file = os.path.join(base_dir, 'rescue-worker.conf')
        with open(config_file, 'w') as f:
            config.write(f)
        if _truthy(info.get('rw_test_no_worker')):
            LOG.info('Test boot: node %s boots no worker', node.uuid)
            return
        env = dict(os.environ,
                   PYTHONPATH=os.pathsep.join([PLUGINS_DIR] + sys.path),
                   RESCUE_WORKER_TEST_GATE_DIR=base_dir)
        with open(os.path.join(base_dir, 'output.log'), 'ab') as out:
            # Its own session: a ramdisk outlives a conductor restart.
            proc = subprocess.Popen(
                [os.path.join(os.path.dirname(sys.executable),
                              'rescue-worker'),
                 '--config-file', config_file,
                 '--kernel-cmdline', os.path.join(base_dir, 'cmdline')],
                stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        _CHILDREN[proc.pid] = proc
        with open(os.path.join(base_dir, 'worker.pid'), 'w') as f:
            f.write('%d\n' % proc.pid)
        LOG.info('Test boot: node %s runs rescue-worker pid %d in %s',
                 node.uuid, proc.pid, base_dir)

    def clean_up_ramdisk(self, task, mode='deploy'):
        node = task.node
        try:
            with open(os.path.join(sandbox_dir(node.uuid),
                                   'worker.pid')) as f:
                pid = int(f.read())
        except (OSError, ValueError):
            return
        # The listener calls clean_up after its "resume" event, so a node
        # finishing a successful rescue is in "rescuing" here.
        if (node.provision_state == states.RESCUING
                and _wait_gone(pid, LOCKDOWN_GRACE)):
            return
        if not _alive(pid) or not _runs_in(pid, sandbox_dir(node.uuid)):
            return
        LOG.info('Test boot: stopping rescue-worker pid %d of node %s',
                 pid, node.uuid)
        os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, STOP_TIMEOUT):
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, STOP_TIMEOUT)
