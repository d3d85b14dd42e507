"""Console scripts.

oslo.messaging imports eventlet (through oslo.service) although nothing here
uses it, and eventlet warns on import; passlib 1.7.4 imports the deprecated
``crypt`` module. Neither warning is actionable for an operator, so the
commands silence exactly those two before anything imports them.
"""

import warnings

warnings.filterwarnings('ignore', message=r'\s*Eventlet is deprecated')
warnings.filterwarnings('ignore', message=".*'crypt' is deprecated.*",
                        category=DeprecationWarning)
