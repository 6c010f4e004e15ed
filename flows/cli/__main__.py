"""``python -m flows.cli``: the ``pyroblur`` console script."""

import sys

from flows.cli.app import main

sys.exit(main())
