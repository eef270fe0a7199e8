"""``python -m shmkit.cli``: the ``shmkit`` command."""

import sys

from shmkit.cli.app import main

sys.exit(main())
