"""``python -m cartoonseg.tagger IMAGE... --tagger DIR``: see :mod:`cartoonseg.tagger.cli`."""

import sys

from .cli import main

sys.exit(main())
