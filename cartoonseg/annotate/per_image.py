"""Optional per-image results of ``annotate --per-image DIR``: ``DIR/<name>/`` with the ``segment`` command's files
(``instances.json``, ``mask_NNN.png``, ``overlay.png``).

``<name>`` is the image's ``file_name`` without its suffix (sub-folders kept), or with the suffix when two inputs
would share it. Each folder is built under a temporary name and renamed into place, so an image interrupted
mid-write leaves no partial folder; an image processed again (its shard was unfinished at a kill) replaces its
earlier folder.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from .inputs import ImageItem

__all__ = ["PerImageWriter", "result_names"]


def result_names(items: Sequence[ImageItem]) -> dict[str, str]:
    """``path -> name`` of each item's result folder (see the module docstring)."""
    stems = [str(PurePosixPath(it.file_name).with_suffix("")) for it in items]
    return {it.path: (stem if stems.count(stem) == 1 else it.file_name) for it, stem in zip(items, stems)}


class PerImageWriter:
    """``writer(item, rgb, instances)`` writes one image's folder under ``folder``."""

    def __init__(self, folder: str | os.PathLike, items: Sequence[ImageItem]) -> None:
        self.folder = Path(folder)
        self.names = result_names(items)

    def __call__(self, item: ImageItem, rgb: np.ndarray, instances) -> Path:
        from ..io import write_instances  # the segment command's per-image writer

        final = self.folder / self.names[item.path]
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.tmp-{socket.gethostname()}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            write_instances(instances, rgb, tmp)
            if final.exists():
                shutil.rmtree(final)  # our own folder from an interrupted earlier pass over this image
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final
