"""A DHCP backend plugin used by the functional tests, installed the way an
operator would add one: a distribution on the worker's path with an entry
point in ``rescue_worker.dhcp_backends``, no change to the rescue_worker
package.

``recording`` touches nothing (it is passive: the step neither brings links
up nor waits for carrier), reports every interface it is handed as
``configured``, and appends what it was asked to
``<state_dir>/recording-backend.jsonl`` so that a test can compare.
"""

import json
import os

from rescue_worker import payloads
from rescue_worker.network import base

CALLS_FILE = 'recording-backend.jsonl'


class RecordingBackend(base.DhcpBackend):
    name = 'recording'
    passive = True

    def __init__(self, state_dir):
        self.calls_file = os.path.join(state_dir, CALLS_FILE)

    @classmethod
    def from_conf(cls, conf):
        return cls(conf.rescue_worker.state_dir)

    def configure(self, interfaces, timeout):
        with open(self.calls_file, 'a') as f:
            f.write(json.dumps({'interfaces': list(interfaces),
                                'timeout': timeout}) + '\n')
        return dict.fromkeys(interfaces, payloads.DHCP_CONFIGURED)
