"""The annotation run: segment (and optionally tag / matte) every input image on this rank's shards, then merge
all shards into one COCO file on rank 0. Built on :mod:`cartoonseg.sharding`; see :func:`annotate`."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import outputs
from ..sharding import RankInfo, ShardedRun, agree, agree_on, check_outside, progress_bar
from .coco import GENERATOR, image_record, merge
from .inputs import ImageItem

__all__ = ["annotate", "check_output", "default_work_dir", "write_output"]


def default_work_dir(out: str | os.PathLike) -> Path:
    """Where the shards of a run writing ``out`` live by default: ``<out>.parts/`` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def _read_rgb(path: str) -> np.ndarray:
    from ..io import read_image  # the one image reader (alpha composited on white, grey expanded, 16-bit scaled)

    return read_image(path)


def check_output(path: str | os.PathLike, *, inputs: Sequence[str] = (), overwrite: bool = False) -> Path:
    """Check, before the work, that the COCO file ``path`` may be written (:func:`cartoonseg.outputs.check_file`:
    never one of the inputs, never a file cartoonseg did not write unless ``overwrite``)."""
    return outputs.check_file(path, inputs=inputs, overwrite=overwrite)


def write_output(path: str | os.PathLike, coco: Mapping[str, Any], *, inputs: Sequence[str] = (),
                 overwrite: bool = False) -> Path:
    """Write the merged COCO file atomically under the output policy (:mod:`cartoonseg.outputs`)."""
    text = json.dumps(coco, sort_keys=True, indent=None, separators=(",", ":")) + "\n"
    return outputs.write_text(path, text, inputs=inputs, overwrite=overwrite)


def annotate(
    segment: Callable[[np.ndarray], Any],
    items: Sequence[ImageItem],
    out: str | os.PathLike,
    *,
    settings: Mapping[str, Any] | None = None,
    work_dir: str | os.PathLike | None = None,
    shard_size: int = 16,
    per_image: Callable[[ImageItem, np.ndarray, Any], None] | None = None,
    rank: RankInfo | None = None,
    progress: bool = True,
    keep_shards: bool = False,
    inputs: Sequence[str] = (),
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any] | None:
    """Annotate ``items`` into the COCO file ``out`` (resumable, sharded by rank).

    Args:
        segment: image (uint8 RGB ``[H,W,3]``) -> :class:`~cartoonseg.structures.Instances` (a
            :class:`~cartoonseg.segmenter.Segmenter`, possibly followed by tagging / matting).
        items: the images (:func:`~cartoonseg.annotate.inputs.collect_inputs`); every rank must pass the same
            list (the CLI broadcasts rank 0's).
        out: the COCO file rank 0 writes.
        settings: everything that changes the results (thresholds, model files, ...): stored in the run folder's
            manifest (a folder of other settings is refused) and in ``info["settings"]`` of the output. The
            manifest also records the absolute path of ``per_image.folder`` when ``per_image`` has one (a
            :class:`~cartoonseg.annotate.per_image.PerImageWriter`): a resume into another folder is refused.
        work_dir: run folder (default :func:`default_work_dir`); on storage shared by all ranks. ``out`` must not
            lie inside it.
        shard_size: images per shard (the unit saved atomically and redone after a kill).
        per_image: called as ``per_image(item, rgb, instances)`` after each image (per-image files); it must
            write atomically, since an image of an unfinished shard is processed again after a kill.
        rank: this process (default from the ``torchrun`` environment).
        progress: one progress bar per rank.
        keep_shards: keep the run's files after the merge (by default the run's own files in the run folder are
            deleted once ``out`` is written, and the folder too when the run created it and nothing else is there).
        inputs, overwrite: the output policy (:mod:`cartoonseg.outputs`) of ``out`` and of ``per_image``'s folder
            (a ``per_image`` with a ``check()`` method is checked with ``out``, before the work).
        log: where rank 0's messages go.

    Returns:
        The COCO dict on rank 0, None on the other ranks.
    """
    rank = rank or RankInfo.from_env()
    folder = Path(work_dir) if work_dir is not None else default_work_dir(out)
    problem = None
    if rank.is_main:  # outputs checked before the work; every rank learns the verdict (none waits for a dead rank 0)
        try:
            check_outside(folder, out)  # the run folder holds only the run's own files
            check_output(out, inputs=inputs, overwrite=overwrite)
            if callable(getattr(per_image, "check", None)):
                per_image.check()
        except ValueError as exc:
            problem = str(exc)
    problem = agree(problem)
    if problem is not None:
        raise outputs.OutputError(problem)
    by_path = {it.path: it for it in items}
    keys = [it.path for it in items]
    fingerprint = {"generator": GENERATOR, **dict(settings or {})}
    if getattr(per_image, "folder", None) is not None:
        # finished shards are not redone, so their images' per-image files exist only in the folder they were
        # written to: a resume into another folder would leave it without them
        fingerprint["per_image_folder"] = os.path.abspath(per_image.folder)
    run = ShardedRun(folder, keys, shard_size=shard_size, fingerprint=fingerprint, rank=rank)
    todo = run.pending()
    total = sum(len(s.keys) for s in run.mine())
    if rank.is_main:
        done = len(run.shards) - len(run.missing())
        if done:
            log(f"resuming: {done} of {len(run.shards)} shard(s) already finished in {folder}")
    # a failure in this rank's share reaches rank 0's wait() through the rank's failure marker: it does not hang it
    with run.reporting_failures(), progress_bar(total, total - sum(len(s.keys) for s in todo), rank, "annotate",
                                                enabled=progress) as bar:
        for shard in todo:
            records = []
            for key in shard.keys:
                item = by_path[key]
                try:
                    rgb = _read_rgb(item.path)
                except ValueError as exc:  # unreadable image: recorded, reported at the merge, never fatal
                    records.append({"error": str(exc)})
                    bar.update(1)
                    continue
                instances = segment(rgb)
                if per_image is not None:
                    per_image(item, rgb, instances)
                records.append(image_record(instances))
                bar.update(1)
            run.save(shard, records)
    if not rank.is_main:
        return None
    run.wait(log=log)
    coco = merge(items, run.results(), settings=settings)
    write_output(out, coco, inputs=inputs, overwrite=overwrite)
    skipped = coco["info"]["skipped"]
    log(f"wrote {out}: {len(coco['images'])} images, {len(coco['annotations'])} instances"
        + (f"; skipped {len(skipped)} unreadable image(s), first: {skipped[0]['file_name']}" if skipped else ""))
    if not keep_shards:
        run.remove()
    return coco


def shared_items(collect: Callable[[], list[ImageItem]], rank: RankInfo) -> list[ImageItem]:
    """Rank 0's ``collect()`` on every rank (only rank 0 collects the inputs); when it fails, every rank raises rank
    0's error at once (:func:`cartoonseg.sharding.agree_on`) instead of waiting for an item list that never comes."""
    box = agree_on(lambda: [(it.path, it.file_name, it.image_id) for it in collect()], rank)
    return [ImageItem(*t) for t in box]
