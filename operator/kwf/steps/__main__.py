"""``python -m kwf.steps``: the step pod's entrypoint (see :mod:`kwf.steps.entrypoint`)."""

import sys

from kwf.steps.entrypoint import main

sys.exit(main())
