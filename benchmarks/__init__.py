"""The fleet benchmark of doc/performance.rst.

``python -m benchmarks run`` from the repository's root (``tox -e
bench``, which starts a private RabbitMQ with pifpaf) rescues a fleet of N
simulated nodes through the project's client and, in the same run, drives N
bare oslo.messaging RPC servers the same way; it also measures one
``rescue-worker`` process against one bare server process, and the
conductor's cost of hashing. The results go to a JSON file and a PNG plot;
``doc/performance.rst`` explains them.

It lives outside the ``rescue_worker`` package, and is not installed with
it, because it needs psutil and matplotlib: the wheel a rescue ramdisk
installs carries nothing that imports them.

Modules:

- ``stats``: pure statistics, machine facts, the report's JSON shape (no
  broker, no oslo.messaging; unit tested);
- ``bare``: the baseline, a bare oslo.messaging server with a no-op
  endpoint that publishes one notification (also a process of its own,
  ``python -m benchmarks bare-server``);
- ``helper``: a fleet helper process (``fleet-helper``) that starts K
  in-process nodes, rescue workers or bare servers, and reports them ready;
- ``driver``: the conductor: helpers, rounds, processes, hashing;
- ``plot``: the PNG (matplotlib, Agg);
- ``cli``: the command line.
"""
