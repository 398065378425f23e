"""ComfyUI node adapters over the cartoonseg library (reached only relatively from the pack root)."""

from __future__ import annotations

import importlib
import logging
import traceback

from . import _comfy

# Explicit list: one module per area. Each module defines NODE_CLASS_MAPPINGS and NODE_DISPLAY_NAME_MAPPINGS.
_MODULES: tuple[str, ...] = ("loaders", "segment", "instances", "depth", "inpaint", "style", "kenburns", "puppet", "tagger")

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
#: module name -> traceback text for areas that failed to import (the rest of the pack still loads; tests
#: assert this stays empty).
IMPORT_ERRORS: dict[str, str] = {}

_comfy.register_model_folder()
for _name in _MODULES:
    try:
        _module = importlib.import_module(f".{_name}", __name__)
    except Exception:  # one broken area (e.g. a missing optional package) must not hide the others
        IMPORT_ERRORS[_name] = traceback.format_exc()
        logging.getLogger("cartoonseg").error("CartoonSeg: nodes/%s.py failed to import:\n%s", _name, IMPORT_ERRORS[_name])
        continue
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
