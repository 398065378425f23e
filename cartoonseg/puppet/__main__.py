"""``python -m cartoonseg.puppet puppet IMAGE --out OUT.webp ...``: see :mod:`cartoonseg.puppet.cli`."""

import sys

from .cli import main

sys.exit(main())
