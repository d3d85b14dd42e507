"""Sphinx configuration of the rescue-worker documentation.

Built by ``tox -e docs`` with warnings as errors. The package must be
installed (tox installs it in develop mode): the configuration reference
is generated from the ``oslo.config.opts`` entry point, and the API
reference imports the modules it documents.
"""

from rescue_worker import version as rw_version

project = 'rescue-worker'
author = 'rescue-worker developers'
copyright = '%s' % author
release = rw_version.version_string()
version = release

extensions = [
    'sphinx.ext.autodoc',
    'oslo_config.sphinxext',
]

# The builtin theme: nothing to fetch, nothing to pin beyond Sphinx.
html_theme = 'alabaster'
html_title = 'rescue-worker %s' % release
html_static_path = []

exclude_patterns = []

# Members in source order: each module groups them as a reader meets them.
autodoc_member_order = 'bysource'
autodoc_default_options = {
    'members': True,
    'show-inheritance': True,
}
# Type hints stay in the signatures, where the source has them.
autodoc_typehints = 'signature'
