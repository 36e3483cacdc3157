"""``python -m vhi.cli``: the ``vhi`` command (how a segmentation worker is started)."""

import sys

from vhi.cli import main

sys.exit(main())
