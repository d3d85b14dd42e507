"""Console scripts.

oslo.messaging imports eventlet (through oslo.service) although nothing here
uses it, and eventlet warns on import. The warning is not actionable for an
operator, so the commands silence exactly that one before anything imports
it.
"""

import warnings

warnings.filterwarnings('ignore', message=r'\s*Eventlet is deprecated')
