"""A step plugin used by the functional tests, installed the way an operator
would add one: a distribution on the worker's path with an entry point in
``rescue_worker.steps``, no change to the rescue_worker package.

``gate`` records each run, tells the test it has entered (a FIFO the test
reads), then blocks until the test opens the gate (a FIFO the test writes), so
a test can act while a request is provably inside a step.
"""

import os

from rescue_worker import pipeline


class GateStep(pipeline.Step):
    name = 'gate'

    def run(self, request, state):
        gate_dir = os.environ['RESCUE_WORKER_TEST_GATE_DIR']
        with open(os.path.join(gate_dir, 'runs'), 'a') as runs:
            runs.write(request.request_id + '\n')
            runs.flush()
            os.fsync(runs.fileno())
        # Each open blocks until the test opens the other end.
        with open(os.path.join(gate_dir, 'entered'), 'w') as entered:
            entered.write(request.request_id)
        with open(os.path.join(gate_dir, 'gate')) as gate:
            gate.read()
        return 'gate opened'
