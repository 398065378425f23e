"""``python -m cartoonseg.kenburns kenburns IMAGE --out OUT.webp ...``: see :mod:`cartoonseg.kenburns.cli`."""

import sys

from .cli import main

sys.exit(main())
