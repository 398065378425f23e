"""The ``--json FILE`` of every benchmark script under the output policy of the cartoonseg commands
(:mod:`cartoonseg.outputs`): the file is checked before the benchmark runs (never a folder, never a file cartoonseg
did not write unless ``--overwrite``) and written atomically at the end, so a typo such as ``--json README.md`` no
longer replaces the user's file after a long run. A refusal or a failed write is one ``error:`` line, status 2.

Usage in a script (the ``--json`` option stays in the script, where ``bench/run.py`` looks for it)::

    p.add_argument("--json", default=None, help=JSON_HELP)
    add_overwrite_argument(p)
    args = p.parse_args(argv)
    check_json(args)            # before the slow work
    ...
    write_json(args, result)    # at the end
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cartoonseg import outputs  # noqa: E402
from cartoonseg.outputs import add_overwrite_argument  # noqa: E402

__all__ = ["JSON_HELP", "add_overwrite_argument", "check_json", "write_json"]

#: the ``--json`` help of every benchmark script (the option itself stays in each script, where bench/run.py finds it)
JSON_HELP = ("write the results to this JSON file (checked before the benchmark runs; never over a file cartoonseg "
             "did not write unless --overwrite)")


def _fail(exc: Exception) -> None:
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(2)


def check_json(args: Any, option: str = "json") -> None:
    """Exit with one ``error:`` line (status 2) unless ``args.<option>`` (when given) may be written."""
    path = getattr(args, option)
    if path:
        try:
            outputs.check_file(path, overwrite=getattr(args, "overwrite", False))
        except (ValueError, OSError) as exc:
            _fail(exc)


def write_json(args: Any, obj: Any, option: str = "json", **dumps: Any) -> None:
    """Write ``obj`` as JSON (``indent=1`` unless given) to ``args.<option>`` when given, atomically and under the
    output policy."""
    path = getattr(args, option)
    if not path:
        return
    try:
        outputs.write_text(path, json.dumps(obj, **{"indent": 1, **dumps}), overwrite=getattr(args, "overwrite", False))
    except (ValueError, OSError) as exc:
        _fail(exc)
