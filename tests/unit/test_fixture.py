"""The fixtures a conductor developer uses: a real worker in two lines, from
testtools as well as from pytest."""

import os
import uuid

import testtools

from rescue_worker import notify
from rescue_worker.fixture import NotificationCapture
from rescue_worker.fixture import RescueWorkerFixture


class TestWithTesttools(testtools.TestCase):

    def test_use_fixture_starts_a_worker_that_rescues(self):
        worker = self.useFixture(RescueWorkerFixture())
        events = self.useFixture(
            NotificationCapture(worker.notification_transport))

        worker.rpc_client().cast({'request_id': 'req-tt'}, 'finalize_rescue',
                                 rescue_password='from testtools',
                                 agent_token=worker.token)

        end = events.wait_for_outcome('req-tt')
        self.assertEqual(notify.EVENT_END, end.event_type)
        self.assertEqual(['password', 'account', 'network', 'verify'],
                         [s['name'] for s in end.data['steps']])

    def test_cleanup_stops_the_worker_and_removes_its_files(self):
        fixture = RescueWorkerFixture(exit_after_rescue=False)
        with fixture:
            base_dir = fixture.base_dir
            worker = fixture.worker
            self.assertTrue(os.path.exists(fixture.config_file))
        self.assertTrue(worker.stopped.is_set())
        self.assertFalse(os.path.exists(base_dir))


def test_fixture_exposes_what_a_conductor_test_needs():
    with RescueWorkerFixture(node_id='node-42') as worker:
        assert worker.node_id == 'node-42'
        assert len(worker.token) >= 32
        assert os.path.isdir(worker.root_dir)
        assert os.path.exists(os.path.join(worker.root_dir, 'etc', 'passwd'))
        assert worker.conf.rescue_worker.dhcp_backend == 'none'
        assert worker.worker.ready.is_set()


def test_options_reach_the_worker_config_file():
    with RescueWorkerFixture(require_hashed=True, steps='password') as worker:
        assert worker.conf.rescue_worker.require_hashed is True
        with open(worker.config_file) as f:
            assert 'require_hashed = true' in f.read()


def test_two_workers_in_one_test_are_independent():
    with RescueWorkerFixture() as one, RescueWorkerFixture() as two, \
            NotificationCapture(one.notification_transport) as events:
        request_id = 'req-%s' % uuid.uuid4()
        two.rpc_client().cast({'request_id': request_id}, 'finalize_rescue',
                              rescue_password='for two only',
                              agent_token=two.token)

        end = events.wait_for_outcome(request_id)
        assert end.data['node_id'] == two.node_id
        assert not os.path.exists(os.path.join(one.root_dir, 'home',
                                               'rescue'))
        assert os.path.isdir(os.path.join(two.root_dir, 'home', 'rescue'))
