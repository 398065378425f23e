"""``python -m cartoonseg.depth ...``: see :mod:`cartoonseg.depth.cli`."""

import sys

from .cli import main

sys.exit(main())
