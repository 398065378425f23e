"""ComfyUI entry point of the cartoonseg pack (V1 node API).

Instance segmentation for cartoons/anime from "Instance-guided Cartoon Editing with a Large-scale Dataset"
(arXiv 2312.01943), as ComfyUI nodes. ComfyUI imports this file as a package named after the pack folder; the
node adapters are reached only relatively (ComfyUI owns a top-level module called ``nodes``). ``sys.path`` is left
as it is (a folder put there would let this pack's top-level names shadow other packs' modules, or theirs ours):
the library ``cartoonseg`` is the one already imported, else the pack's own copy, loaded from its folder under its
name. Importing does no I/O beyond registering the ``cartoonseg`` model folder with ``folder_paths``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
_LIB_DIR = os.path.join(_PACK_DIR, "cartoonseg")


def _load_library() -> None:
    """Make ``import cartoonseg`` give the library without touching ``sys.path``: keep a library already imported
    (a ``pip install``-ed cartoonseg, or a script that imported it first), else load the pack's own copy, the one
    these nodes were written with, from its folder."""
    lib = sys.modules.get("cartoonseg")
    if lib is not None and lib is not sys.modules.get(__name__):
        here = os.path.realpath(os.path.dirname(getattr(lib, "__file__", None) or ""))
        if here != os.path.realpath(_LIB_DIR):
            logging.getLogger("cartoonseg").warning(
                "CartoonSeg: using the cartoonseg library already imported from %s, not the pack's own copy in %s",
                here, _LIB_DIR)
        return
    spec = importlib.util.spec_from_file_location("cartoonseg", os.path.join(_LIB_DIR, "__init__.py"),
                                                  submodule_search_locations=[_LIB_DIR])
    lib = importlib.util.module_from_spec(spec)
    sys.modules["cartoonseg"] = lib
    try:
        spec.loader.exec_module(lib)
    except BaseException:
        sys.modules.pop("cartoonseg", None)
        raise


# When the pack folder itself is called "cartoonseg" (e.g. a registry install), ComfyUI registered this file as
# sys.modules["cartoonseg"]: the library then takes that name, and the node adapters a private one.
_AS_LIBRARY_NAME = __name__ == "cartoonseg" and os.path.isfile(os.path.join(_LIB_DIR, "__init__.py"))
_load_library()
if _AS_LIBRARY_NAME or not __package__:
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
