"""``python -m cartoonseg.style style IMAGE... --model SD --out DIR``: see :mod:`cartoonseg.style.cli`."""

import sys

from .cli import main

sys.exit(main())
