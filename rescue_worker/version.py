"""The installed package's version, as get_status and payloads report it."""

from __future__ import annotations

from importlib import metadata


def version_string() -> str:
    try:
        return metadata.version('rescue-worker')
    except metadata.PackageNotFoundError:
        # Running from a source tree that was never installed.
        return '0+unknown'
