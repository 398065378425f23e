"""ComfyUI entry point of the cartoonseg pack (V1 node API).

Instance segmentation for cartoons/anime from "Instance-guided Cartoon Editing with a Large-scale Dataset"
(arXiv 2312.01943), as ComfyUI nodes. ComfyUI imports this file as a package named after the pack folder; the
node adapters are reached only relatively (ComfyUI owns a top-level module called ``nodes``) and the library
``cartoonseg`` is made importable by appending this folder to ``sys.path``. Importing does no I/O beyond
registering the ``cartoonseg`` model folder with ``folder_paths``.
"""

from __future__ import annotations

import importlib.util
import os
import sys

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
if _PACK_DIR not in sys.path:
    sys.path.append(_PACK_DIR)

_AS_LIBRARY_NAME = __name__ == "cartoonseg" and os.path.isfile(os.path.join(_PACK_DIR, "cartoonseg", "__init__.py"))
if _AS_LIBRARY_NAME or not __package__:
    if _AS_LIBRARY_NAME:
        # The pack folder itself is called "cartoonseg" (e.g. a registry install), so ComfyUI registered this file
        # as sys.modules["cartoonseg"] and `import cartoonseg` would find the pack instead of the library. Put the
        # library under its name.
        _lib_spec = importlib.util.spec_from_file_location(
            "cartoonseg", os.path.join(_PACK_DIR, "cartoonseg", "__init__.py"),
            submodule_search_locations=[os.path.join(_PACK_DIR, "cartoonseg")])
        _lib = importlib.util.module_from_spec(_lib_spec)
        sys.modules["cartoonseg"] = _lib
        _lib_spec.loader.exec_module(_lib)
    # Load the node adapters under a private package name: also when this file is imported as a plain module
    # (no parent package: pytest collecting a checkout whose folder name is not an identifier, such as
    # "ComfyUI-CartoonSeg"), where a relative import cannot work.
    _nodes_spec = importlib.util.spec_from_file_location(
        "cartoonseg_comfy_nodes", os.path.join(_PACK_DIR, "nodes", "__init__.py"),
        submodule_search_locations=[os.path.join(_PACK_DIR, "nodes")])
    _nodes = importlib.util.module_from_spec(_nodes_spec)
    sys.modules["cartoonseg_comfy_nodes"] = _nodes
    _nodes_spec.loader.exec_module(_nodes)
    NODE_CLASS_MAPPINGS = _nodes.NODE_CLASS_MAPPINGS
    NODE_DISPLAY_NAME_MAPPINGS = _nodes.NODE_DISPLAY_NAME_MAPPINGS
else:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

#: front-end helper (web/cartoonseg.js): widens this pack's nodes so the new frontend does not cut their titles
WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
