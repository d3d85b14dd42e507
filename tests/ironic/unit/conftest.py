"""Ironic's unit-test package must be imported before any module of
ironic.conductor (it selects oslo.service's threading backend and sets
Ironic's test configuration up); a conftest runs before test modules."""

import ironic.tests.unit  # noqa: F401
