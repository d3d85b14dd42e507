"""Test base of the Ironic plug-in: Ironic's own DbTestCase, a node of the
``manual-management-rescue-worker`` type, and a fake management API."""

from __future__ import annotations

# tests/ironic/conftest.py imports ironic.tests.unit before this module.
import json
import threading
import urllib.parse
from unittest import mock

from ironic.common import states
from ironic.conductor import utils as conductor_utils
from ironic.drivers.modules import pxe
from ironic.tests.unit.db import base as db_base
from ironic.tests.unit.objects import utils as obj_utils

from rescue_worker.ironic import broker
from rescue_worker.ironic import listener
from rescue_worker.ironic import rescue

MANAGEMENT_URL = 'http://admin:ADMIN-SECRET@192.0.2.10:15672/'
RAMDISK_URL = 'rabbit://192.0.2.10:5672/'
PASSWORD = 'Tenant-Rescue-Pass'
TIMEOUT = 10.0


class FakeManagementAPI:
    """The RabbitMQ management API, in memory, at the HTTP layer."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, object]] = []
        self.users: dict[str, dict] = {}
        self.permissions: dict[tuple[str, str], dict] = {}
        self.topic_permissions: dict[tuple[str, str], dict] = {}
        self.limits: dict[tuple[str, str], int] = {}
        self.auth: set[tuple[str, str]] = set()
        #: an HTTP status to answer every request with (a broken broker)
        self.fail_with: int | None = None

    def __call__(self, method, url, body, auth, timeout):
        assert url.startswith('http://192.0.2.10:15672/api/'), url
        self.auth.add(auth)
        path = [urllib.parse.unquote(p) for p in
                url.split('/api/', 1)[1].split('/')]
        json.dumps(body)  # what goes on the wire must be JSON
        self.requests.append((method, '/'.join(path), body))
        if self.fail_with is not None:
            return self.fail_with, b''
        kind = path[0]
        if method == 'PUT' and kind == 'users':
            self.users[path[1]] = body
        elif method == 'PUT' and kind == 'permissions':
            self.permissions[(path[1], path[2])] = body
        elif method == 'PUT' and kind == 'topic-permissions':
            self.topic_permissions[(path[1], path[2])] = body
        elif method == 'PUT' and kind == 'user-limits':
            self.limits[(path[1], path[2])] = body['value']
        elif method == 'DELETE' and kind == 'users':
            if path[1] not in self.users:
                return 404, b''
            # RabbitMQ deletes a user's permissions and limits with it.
            del self.users[path[1]]
            for table in (self.permissions, self.topic_permissions):
                for key in [k for k in table if k[1] == path[1]]:
                    del table[key]
            for key in [k for k in self.limits if k[0] == path[1]]:
                del self.limits[key]
        else:
            return 405, b''
        return 204, b''


class RecordingListener(listener.RescueWorkerListener):
    """The real listener, which also says when it has handled an event."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.handled: list[str] = []
        #: event types received but not acted on (lost notifications)
        self.lose: set[str] = set()
        self._cond = threading.Condition()

    def handle(self, publisher_id, event_type, payload):
        try:
            if event_type not in self.lose:
                super().handle(publisher_id, event_type, payload)
        finally:
            with self._cond:
                self.handled.append(event_type)
                self._cond.notify_all()

    def wait_handled(self, event_type: str, count: int = 1,
                     timeout: float = TIMEOUT) -> None:
        with self._cond:
            if not self._cond.wait_for(
                    lambda: self.handled.count(event_type) >= count,
                    timeout):
                raise TimeoutError('%s not handled %d times within %.0f s; '
                                   'handled %s' % (event_type, count,
                                                   timeout, self.handled))


class RescueWorkerTestCase(db_base.DbTestCase):

    def _clear_attrs(self):
        # Ironic's base deletes every public instance attribute after a
        # test, pytest's bound test method among them, which pytest then
        # fails to delete itself. Memory is not a concern for this suite.
        pass

    def setUp(self):
        super().setUp()
        self.config(enabled_hardware_types=['manual-management-rescue-worker',
                                            'fake-hardware'])
        self.config(enabled_rescue_interfaces=['rescue-worker', 'no-rescue',
                                               'fake'])
        self.config(enabled_boot_interfaces=['pxe', 'fake'])
        self.config(transport_url='fake://', group='rescue_worker')
        self.config(ramdisk_transport_url=RAMDISK_URL, group='rescue_worker')
        self.config(management_url=MANAGEMENT_URL, group='rescue_worker')
        self.config(vhost='/', group='rescue_worker')
        self.broker = FakeManagementAPI()
        self.patch_object = mock.patch.object
        factory = mock.patch.object(
            rescue, 'BROKER_ADMIN_FACTORY',
            lambda: broker.BrokerAdmin(MANAGEMENT_URL, http=self.broker))
        factory.start()
        self.addCleanup(factory.stop)
        # The boot interface's real work (TFTP, image cache) is not what is
        # tested: what it is given is.
        for name in ('prepare_ramdisk', 'clean_up_ramdisk',
                     'clean_up_instance', 'prepare_instance'):
            patcher = mock.patch.object(pxe.PXEBoot, name, autospec=True)
            setattr(self, name, patcher.start())
            self.addCleanup(patcher.stop)
        # No listener of a previous test, none started behind our back.
        listener.install(None)
        self.addCleanup(listener.install, None)

    def create_node(self, **kwargs):
        values = dict(
            driver='manual-management-rescue-worker',
            rescue_interface='rescue-worker', boot_interface='pxe',
            power_interface='fake', management_interface='fake',
            network_interface='noop', deploy_interface='direct',
            inspect_interface='no-inspect', vendor_interface='no-vendor',
            raid_interface='no-raid', bios_interface='no-bios',
            console_interface='no-console', firmware_interface='no-firmware',
            storage_interface='noop',
            provision_state=states.RESCUING,
            instance_info={
                'rescue_password': PASSWORD,
                'hashed_rescue_password': conductor_utils.hash_password(
                    PASSWORD)},
            driver_internal_info={})
        values.update(kwargs)
        return obj_utils.create_test_node(self.context, **values)
