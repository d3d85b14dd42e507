"""The provisioning steps, each registered as a ``rescue_worker.steps``
entry point (see ``rescue_worker.pipeline``)."""
