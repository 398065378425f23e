"""``python -m cartoonseg.annotate ...`` = ``python -m cartoonseg annotate ...``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(["annotate", *sys.argv[1:]]))
