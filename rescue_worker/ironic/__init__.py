"""Ironic's side of rescue-worker: the ``rescue-worker`` rescue interface.

Installed with the extra ``rescue-worker[ironic]``; see doc/source/ironic.rst.
Nothing outside this package imports Ironic.
"""
