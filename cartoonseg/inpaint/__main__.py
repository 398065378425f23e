"""``python -m cartoonseg.inpaint ...``: see :mod:`cartoonseg.inpaint.cli`."""

import sys

from .cli import main

sys.exit(main())
