import sys

from rescue_worker.bench.cli import main

sys.exit(main())
