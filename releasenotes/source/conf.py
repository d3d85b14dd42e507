"""Sphinx configuration of the rescue-worker release notes.

Built by ``tox -e releasenotes``. reno reads the notes from the git history
of ``releasenotes/notes``, so a note appears here once it is committed.
"""

project = 'rescue-worker release notes'
author = 'rescue-worker developers'
copyright = '%s' % author

extensions = [
    'reno.sphinxext',
]

# The builtin theme: nothing to fetch, nothing to pin beyond Sphinx.
html_theme = 'alabaster'
html_static_path = []

exclude_patterns = []
