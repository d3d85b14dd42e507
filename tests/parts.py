"""Tests that need a part of the machine (a broker, root, a program) ask for
it here: locally a missing part skips the test and says which; under
``CI=true`` it fails the test, so CI never passes by skipping."""

import os
import shutil

import pytest


def missing(what: str) -> None:
    message = 'needs %s' % what
    if os.environ.get('CI') == 'true':
        pytest.fail(message + ' (CI=true: a missing part is a failure)')
    pytest.skip(message)


def require_programs(*names: str, package: str = '') -> None:
    absent = [name for name in names if shutil.which(name) is None]
    if absent:
        missing('%s%s' % (', '.join(absent),
                          ' (Debian package %s)' % package if package
                          else ''))


def require_root() -> None:
    if os.geteuid() != 0:
        missing('root')
