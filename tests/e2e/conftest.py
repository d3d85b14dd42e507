"""Fixtures every end-to-end module shares."""

# The conductor's side in plain oslo.messaging, as the functional tests
# have it.
from tests.functional.conftest import bus  # noqa: F401
