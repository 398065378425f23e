"""ComfyUI node adapters over the cartoonseg library (reached only relatively from the pack root)."""

from __future__ import annotations

import importlib

from . import _comfy

# Explicit list: one module per area. Each module defines NODE_CLASS_MAPPINGS and NODE_DISPLAY_NAME_MAPPINGS.
_MODULES: tuple[str, ...] = ("loaders", "segment", "instances", "depth", "inpaint", "style", "kenburns", "tagger")

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}

_comfy.register_model_folder()
for _name in _MODULES:
    _module = importlib.import_module(f".{_name}", __name__)
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
