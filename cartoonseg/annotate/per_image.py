"""Optional per-image results of ``annotate --per-image DIR``: ``DIR/<name>/`` with the ``segment`` command's files
(``instances.json``, ``mask_NNN.png``, ``overlay.png``).

``<name>`` is the image's ``file_name`` without its suffix (sub-folders kept; ``..``, ``.`` and a leading ``/`` or
drive dropped, so every folder lies under ``DIR``). Names are compared case-insensitively (as macOS and Windows file
systems do): when two images would share a folder, or one image's folder would hold another's (``cat.png`` and
``cat/001.png``), the suffix is kept (``cat.png/``), and where that still clashes ``-<8 hex digits of the image's
path>`` is added. Each folder is a result folder of :mod:`cartoonseg.outputs`: built under a temporary name and
renamed into place, so an image interrupted mid-write leaves no partial folder; an image processed again (its shard
was unfinished at a kill) replaces its earlier folder.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from .. import outputs
from ..instance_files import write_instances  # the segment command's per-image writer
from .inputs import ImageItem

__all__ = ["PerImageWriter", "result_names"]


def _parts(item: ImageItem) -> list[str]:
    """The item's ``file_name`` as relative path parts that stay under the folder."""
    parts = [p for p in PurePosixPath(item.file_name.replace("\\", "/")).parts if p not in ("/", ".", "..", "")]
    if parts and len(parts[0]) == 2 and parts[0][1] == ":":  # a Windows drive
        parts = parts[1:]
    return parts or [Path(item.path).name]


def _clashes(names: dict[str, list[str]]) -> set[str]:
    """Paths whose name equals another's or is a folder above another's, case-insensitively."""
    keys = {path: "/".join(parts).casefold() for path, parts in names.items()}
    counts = Counter(keys.values())
    above = {"/".join(parts[:i]).casefold() for parts in names.values() for i in range(1, len(parts))}
    return {path for path, key in keys.items() if counts[key] > 1 or key in above}


def result_names(items: Sequence[ImageItem]) -> dict[str, str]:
    """``path -> name`` of each item's result folder (see the module docstring)."""
    full = {it.path: _parts(it) for it in items}
    names = {path: parts[:-1] + [str(PurePosixPath(parts[-1]).with_suffix("")) or parts[-1]]
             for path, parts in full.items()}
    for step in ("suffix", "hash"):
        clashing = _clashes(names)
        if not clashing:
            break
        for path in clashing:
            parts = full[path]
            if step == "suffix":
                names[path] = list(parts)
            else:
                digest = hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()[:8]
                names[path] = parts[:-1] + [f"{parts[-1]}-{digest}"]
    clashing = _clashes(names)
    if clashing:
        raise outputs.OutputError(f"cannot give these images distinct per-image folders: {sorted(clashing)[:4]}")
    return {path: "/".join(parts) for path, parts in names.items()}


class PerImageWriter:
    """``writer(item, rgb, instances)`` writes one image's folder under ``folder`` through the output policy
    (:mod:`cartoonseg.outputs`): each folder is a result folder, built aside and swapped in whole, recorded as
    cartoonseg's in its own manifest (so several ranks write their images into ``folder`` side by side), never over
    an input, never over a foreign folder unless ``overwrite``. :meth:`check` runs once, before the work."""

    def __init__(self, folder: str | os.PathLike, items: Sequence[ImageItem], *, inputs: Sequence[str] = (),
                 overwrite: bool = False, outside: Sequence[str | os.PathLike] = ()) -> None:
        self.folder = Path(folder)
        self.names = result_names(items)
        self.inputs = list(inputs)
        self.overwrite = bool(overwrite)
        self.outside = [Path(p) for p in outside]

    def check(self) -> None:
        """Refuse a ``folder`` that holds an input, or files cartoonseg did not write (unless ``overwrite``); an
        interrupted earlier run of this command left only its own result folders there, so a resume passes. Paths
        given as ``outside`` (the COCO file and the run's work folder) must not lie in ``folder``: the run writes
        them itself, so a resume would find them foreign, and an image's folder could take their name."""
        base = Path(os.path.abspath(self.folder))
        for path in self.outside:
            if Path(os.path.abspath(path)).is_relative_to(base):
                raise outputs.OutputError(f"{path} lies inside the per-image folder {self.folder}: "
                                          f"choose a --per-image folder that does not hold --out or --work-dir")
        outputs.check_folder(self.folder, inputs=self.inputs, overwrite=self.overwrite)

    def __call__(self, item: ImageItem, rgb: np.ndarray, instances) -> Path:
        final = self.folder / self.names[item.path]
        parent = outputs.OutputFolder(final.parent, inputs=self.inputs, overwrite=self.overwrite, check_foreign=False)
        with parent.result_dir(final.name) as res:
            write_instances(instances, rgb, res.path, source=item.path)
        return final
