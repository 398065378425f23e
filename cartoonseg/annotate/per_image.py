"""Optional per-image results of ``annotate --per-image DIR``: ``DIR/<name>/`` with the ``segment`` command's files
(``instances.json``, ``mask_NNN.png``, ``overlay.png``).

``<name>`` is the image's ``file_name`` without its suffix (sub-folders kept), or with the suffix when two inputs
would share it. Each folder is a result folder of :mod:`cartoonseg.outputs`: built under a temporary name and renamed
into place, so an image interrupted mid-write leaves no partial folder; an image processed again (its shard was
unfinished at a kill) replaces its earlier folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from .. import outputs
from ..instance_files import write_instances  # the segment command's per-image writer
from .inputs import ImageItem

__all__ = ["PerImageWriter", "result_names"]


def result_names(items: Sequence[ImageItem]) -> dict[str, str]:
    """``path -> name`` of each item's result folder (see the module docstring)."""
    stems = [str(PurePosixPath(it.file_name).with_suffix("")) for it in items]
    return {it.path: (stem if stems.count(stem) == 1 else it.file_name) for it, stem in zip(items, stems)}


class PerImageWriter:
    """``writer(item, rgb, instances)`` writes one image's folder under ``folder`` through the output policy
    (:mod:`cartoonseg.outputs`): each folder is a result folder, built aside and swapped in whole, recorded as
    cartoonseg's in its own manifest (so several ranks write their images into ``folder`` side by side), never over
    an input, never over a foreign folder unless ``overwrite``. :meth:`check` runs once, before the work."""

    def __init__(self, folder: str | os.PathLike, items: Sequence[ImageItem], *, inputs: Sequence[str] = (),
                 overwrite: bool = False) -> None:
        self.folder = Path(folder)
        self.names = result_names(items)
        self.inputs = list(inputs)
        self.overwrite = bool(overwrite)

    def check(self) -> None:
        """Refuse a ``folder`` that holds an input, or files cartoonseg did not write (unless ``overwrite``); an
        interrupted earlier run of this command left only its own result folders there, so a resume passes."""
        outputs.check_folder(self.folder, inputs=self.inputs, overwrite=self.overwrite)

    def __call__(self, item: ImageItem, rgb: np.ndarray, instances) -> Path:
        final = self.folder / self.names[item.path]
        parent = outputs.OutputFolder(final.parent, inputs=self.inputs, overwrite=self.overwrite, check_foreign=False)
        with parent.result_dir(final.name) as res:
            write_instances(instances, rgb, res.path, source=item.path)
        return final
