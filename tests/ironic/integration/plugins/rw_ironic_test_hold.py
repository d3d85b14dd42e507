"""A worker step for the Ironic integration tests: ``hold``.

It tells the test it has entered (it writes the request id to the FIFO
``entered``, which blocks until the test reads it), then blocks until the
test opens the FIFO ``gate``: while it holds, the cast has provably arrived
and the outcome is provably not yet published, so the test can restart
Ironic or forge an outcome at that exact point. The FIFOs are in
``$RESCUE_WORKER_TEST_GATE_DIR``, which the test boot interface sets to the
node's sandbox.
"""

import os

from rescue_worker import pipeline


class HoldStep(pipeline.Step):
    name = 'hold'

    def run(self, request, state):
        gate_dir = os.environ['RESCUE_WORKER_TEST_GATE_DIR']
        # Each open blocks until the test opens the other end.
        with open(os.path.join(gate_dir, 'entered'), 'w') as entered:
            entered.write(request.request_id)
        with open(os.path.join(gate_dir, 'gate')) as gate:
            gate.read()
        return 'released by the test'
