"""Sharded, resumable runs over a list of items, one process per GPU or CPU worker under ``torchrun``.

Used by ``python -m cartoonseg annotate`` and by evaluation / prediction dumps: anything that maps a fixed list of
items (image paths, dataset indices) to JSON-serialisable results, possibly on many processes and nodes, and must
survive being killed.

How it works:

* the items are cut into **shards** of ``shard_size`` consecutive items (shard ``i`` holds items
  ``[i*shard_size, (i+1)*shard_size)``); shard ``i`` belongs to rank ``i % world_size``. The cut depends only on
  the item list and ``shard_size``, so a run restarted with a different number of processes reuses every shard
  already finished;
* a finished shard is one JSON file ``shard-<i>.json`` in the run folder, written atomically (temporary file in
  the same folder, flushed, renamed over the final name), so it either exists complete or not at all. A shard file
  that exists is **never recomputed**; after a kill, at most the shards that were in progress are redone;
* ``manifest.json`` in the run folder records the item list (its SHA-256), ``shard_size`` and a caller-supplied
  ``fingerprint`` (model files, settings). A folder written by a different run (other items or settings), or
  holding a ``manifest.json`` of someone else, is refused with a ValueError instead of mixing results;
* :meth:`ShardedRun.remove` deletes only the files the run wrote (its manifest, its ``shard-<i>.json`` files after
  checking that each holds this run's items, their temporary files) and the folder only when it is then empty and
  the run created it: whatever else lives in the folder stays. Outputs of a command must lie outside its run
  folder (:func:`check_outside`);
* rank 0 waits until every shard file exists (file polling: works with any launcher, any number of nodes, as long
  as the run folder is on storage all ranks share; no collective that could time out while ranks are unevenly
  loaded), then reads all shards back in item order for the merge;
* every rank builds the run itself (describes it, checks the run folder, then creates it or checks its manifest,
  and makes the attempt token) through :func:`every_rank`, in two steps: first every rank only looks, then every
  rank creates. A rank failing anywhere in that (the folder is a file on its node, another run's manifest, a
  fingerprint that is not JSON, items, shard size or fingerprint other than rank 0's, a folder it cannot create) ends every rank at once with the same ``rank N: ...``
  error, and nothing is left behind: no rank creates anything while another may still refuse, and what a rank
  created before another failed in the second step (the folder, its missing parents) is taken back;
* a rank that fails while computing its shards (an image missing on its node, out of memory, any exception inside
  :meth:`ShardedRun.reporting_failures`) writes a **failure marker** ``failed-rank-<r>.json`` (its rank, host and
  error line) into the run folder before it exits, and rank 0's :meth:`ShardedRun.wait` raises
  :class:`RankFailedError` naming that rank and its error instead of waiting for shards that never come. A marker
  counts only for the attempt that wrote it (a token rank 0 gives every rank), so a resumed run is not stopped by
  the marker of an earlier one. A run in which **no shard finishes for** :data:`STALL_TIMEOUT_S` seconds (one hour;
  ``CARTOONSEG_STALL_TIMEOUT`` in seconds changes it) and no marker appears (a rank killed outright, or a run folder
  that is not on storage rank 0 can read) ends with ``TimeoutError`` instead of waiting forever; the finished shards
  stay, so the same command resumes;
* under ``torchrun`` (``WORLD_SIZE`` > 1) :func:`init_distributed` starts a gloo process group (CPU objects only,
  so it works beside CUDA) and :func:`agree` gives every rank rank 0's copy of an object, for example the item
  list, so all ranks shard the same list even if a folder listing differs between nodes; :func:`agree_on` makes
  that object on rank 0 and, when making it fails, makes every rank fail with rank 0's error (none waits);
  :func:`every_rank` does a step on every rank (reading per-node files: a checkpoint, the dataset, weights) and,
  when it fails on any rank, makes every rank fail with that rank's error, naming it.

API::

    from cartoonseg.sharding import ShardedRun, RankInfo, init_distributed, agree

    rank = init_distributed()                      # RankInfo(rank, world_size, local_rank); no-op for 1 process
    keys = agree(sorted(str(p) for p in paths))    # rank 0's list on every rank
    run = ShardedRun(work_dir, keys, shard_size=16, fingerprint={"model": "...", "thr": 0.3}, rank=rank)
    for shard in run.pending():                    # this rank's shards that are not finished yet
        run.save(shard, [compute(k) for k in shard.keys])    # one result per key, atomically
    if rank.rank == 0:
        run.wait()                                 # every rank's shards are on disk
        results = run.results()                    # list of results in item order
        ...merge, write the final output...
        run.remove()                               # delete the run's files (optional)

or, in one call, ``results = run_sharded(work_dir, keys, compute, ...)`` (the list on rank 0, None elsewhere).

A shard holds ``{"version", "shard", "keys", "results"}``; results must be JSON-serialisable (``json.dumps`` with
``allow_nan=False``).
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime
import gc
import hashlib
import json
import os
import pickle
import re
import socket
import sys
import time
import uuid
from contextlib import contextmanager
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._env import env_seconds

__all__ = ["RankFailedError", "RankInfo", "Shard", "ShardedRun", "agree", "agree_on", "check_outside", "every_rank",
           "init_distributed", "progress_bar", "run_sharded", "stall_timeout", "write_atomic"]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: empty file the rank that created the work folder leaves in it (the folder is removed at the end only then)
CREATED_MARK = ".cartoonseg-created"
_TMP_MARK = ".tmp-"
#: manifest keys that identify a run
_IDENTITY = ("version", "num_items", "items_sha256", "shard_size", "fingerprint")
#: a fingerprint entry one side lacks (None is a value)
_MISSING = object()
#: the failure marker a rank that failed leaves in the run folder (``failed-rank-<r>.json``)
_FAILED = re.compile(r"failed-rank-(\d+)\.json$")
#: seconds rank 0 waits without any shard finishing (and no failure marker) before it gives up
#: (``CARTOONSEG_STALL_TIMEOUT`` overrides it)
STALL_TIMEOUT_S = 3600.0


class RankFailedError(RuntimeError):
    """Another rank of a sharded run failed (its failure marker is in the run folder): raised by rank 0's
    :meth:`ShardedRun.wait` with the rank, its host and its error line."""


def stall_timeout() -> float:
    """:data:`STALL_TIMEOUT_S`, or ``CARTOONSEG_STALL_TIMEOUT`` when set (seconds, > 0); ``ValueError`` naming the
    variable for anything else."""
    return env_seconds("CARTOONSEG_STALL_TIMEOUT", STALL_TIMEOUT_S)


def _tmp_of(name: str) -> re.Pattern:
    """The temporary names :func:`write_atomic` uses for the file ``name`` (``<name>.tmp-<host>-<pid>``)."""
    return re.compile(re.escape(name + _TMP_MARK) + r"[^/\\]+-\d+$")


def check_outside(folder: str | os.PathLike, *outputs: str | os.PathLike | None, what: str = "work folder") -> None:
    """Raise ``ValueError`` when one of ``outputs`` is ``folder`` or lies inside it: a run folder holds only the
    run's own files, so a command's output written there could collide with them or be mistaken for them."""
    base = os.path.realpath(folder)
    for out in outputs:
        if out is None:
            continue
        real = os.path.realpath(out)
        if real == base or real.startswith(base.rstrip(os.sep) + os.sep):
            raise ValueError(f"output {out} lies inside the {what} {folder}, which holds the run's own files; "
                             f"write it elsewhere or choose another {what}")


@dataclasses.dataclass(frozen=True)
class RankInfo:
    """Which process this is. ``from_env()`` reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (set by
    ``torchrun``); without them it is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={self.rank} world_size={self.world_size}")

    @classmethod
    def from_env(cls) -> RankInfo:
        try:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local = int(os.environ.get("LOCAL_RANK", str(rank)))
        except ValueError as exc:
            raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers: {exc}") from None
        return cls(rank, world, local)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(timeout_minutes: float = 60.0) -> RankInfo:
    """The :class:`RankInfo` of this process; under ``torchrun`` with more than one process, also a gloo process
    group (if none exists yet) for :func:`agree`. The group is used only at start-up, so ranks may then run for
    any time without collective time-outs."""
    info = RankInfo.from_env()
    if info.world_size > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=datetime.timedelta(minutes=timeout_minutes))
            atexit.register(close_group)
    return info


#: How long a rank waits for the others before it closes a process group anyway (they may be gone).
CLOSE_WAIT_S = 10.0


def close_group() -> None:
    """Close the process group, if one is open, once every rank has come here (at most :data:`CLOSE_WAIT_S`: a rank
    that failed alone goes on without the others). A gloo group torn down while another rank still sends, or left
    open at exit when another rank has gone first, aborts the process (``terminate called without an active
    exception``, status 134, after its own result or ``error:`` line). The trainers call it at their end,
    :func:`init_distributed`'s group closes at exit."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        dist.barrier(async_op=True).wait(timeout=datetime.timedelta(seconds=CLOSE_WAIT_S))
    except Exception:  # a rank is gone (it failed alone): nothing more to wait for
        pass
    dist.destroy_process_group()
    gc.collect()  # a group still referenced from a reference cycle (a DDP wrapper) goes now, not at interpreter exit


def _group_size() -> int:
    """The number of processes of the running process group (1 without one)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def agree(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank when a process group is running; ``obj`` itself otherwise."""
    import torch.distributed as dist

    if _group_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree_on(make: Callable[[], Any], rank: RankInfo) -> Any:
    """Rank 0's ``make()`` on every rank (only rank 0 calls it; see :func:`agree`). When it raises, rank 0 sends
    the exception instead and every rank raises it (rank 0 its own, the others a copy; for an exception that cannot
    be pickled, one of the nearest class that can, with the same message), so no rank is left waiting
    for a rank 0 that gave up (it would wait until rank 0's process ends, or for the group's time-out, and then
    report a lost connection instead of the cause).

    Every step that rank 0 does alone while the other ranks wait for it goes through here (a barrier after it
    would leave them waiting when it fails): the annotate item list, and the trainers' output-folder check,
    checkpoints, log lines, evaluations and exports (``rank`` may be any object with ``is_main``, such as their
    :class:`cartoonseg.training.distributed.DistContext`)."""
    failed, value, own = False, None, None
    if rank.is_main:
        try:
            value = make()
        except Exception as exc:  # every rank must hear of it, whatever it is
            failed, value, own = True, _sendable(exc), exc
    failed, value = agree((failed, value))
    if own is not None:
        raise own
    if failed:
        raise value from None
    return value


def every_rank(make: Callable[[], Any], rank: Any) -> Any:
    """``make()`` on every rank (its own result on each), then one small exchange of ok / error between the ranks:
    when it raised on any rank, every rank raises the error of the lowest failing rank, its message prefixed with
    ``rank N: `` (the same class, or for an exception that cannot travel the nearest one that can, see
    :func:`_sendable`), so all end at once with the same one line instead of the others waiting in their next
    collective for a rank that is gone (until the group's time-out, minutes). A failing rank chains its own
    exception (``raise ... from``: a bug keeps its traceback). Without a process group it is ``make()``.

    For the steps every rank does itself, reading what may differ between nodes: loading the checkpoint on resume,
    the dataset, an init checkpoint or the weights (the trainers, annotate). Steps rank 0 does alone go through
    :func:`agree_on`. ``rank``: a :class:`RankInfo` or anything with ``rank`` and ``world_size``."""
    import torch.distributed as dist

    if _group_size() == 1:
        return make()
    value, own = None, None
    try:
        value = make()
    except Exception as exc:  # every rank must hear of it, whatever it is
        own = exc
    told = [None] * dist.get_world_size()
    dist.all_gather_object(told, None if own is None else _sendable(own, f"rank {rank.rank}: {own}"))
    first = next((i for i, exc in enumerate(told) if exc is not None), None)
    if first is None:
        return value
    if first == rank.rank:
        raise told[first] from own
    raise told[first] from None


def _sendable(exc: Exception, message: str | None = None) -> Exception:
    """``exc``, or when it cannot be pickled (an attribute holding a lock, a file, a model), an exception of the
    nearest class in its MRO that can, with the same message: ``ValueError`` for a ``ValueError`` subclass, and so
    on. The other ranks then fail as rank 0 does, under the CLI policy too (a one-line error stays one ``error:``
    line with rank 0's words, a bug stays a traceback); the traceback's note names the class rank 0 raised.
    With ``message``: always such a stand-in, of ``exc``'s own class when it can travel, with that message."""
    if message is None:
        try:
            pickle.loads(pickle.dumps(exc))
            return exc
        except Exception:
            pass
        message = str(exc)
    for cls in type(exc).__mro__:
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            continue
        try:
            stand_in = cls(message)
            if cls is not type(exc):
                stand_in.__notes__ = [f"the rank raised {type(exc).__module__}.{type(exc).__qualname__}, which "
                                      f"cannot be sent to the other ranks; this is a {cls.__name__} in its place"]
            copy = pickle.loads(pickle.dumps(stand_in))
        except Exception:  # a class that takes other arguments, or still cannot travel: try its base
            continue
        if type(copy) is cls and str(copy) == message:
            return stand_in
    return Exception(message)  # not reached: Exception(message) always travels


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` all at once: a temporary file beside it, flushed to disk, renamed over ``path``.
    A process killed at any moment leaves either the old file or the new one, never a partial file."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}{_TMP_MARK}{socket.gethostname()}-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


@dataclasses.dataclass(frozen=True)
class Shard:
    """Shard ``index``: the items ``keys`` (positions ``start`` .. ``start + len(keys)``) of the run."""

    index: int
    start: int
    keys: tuple[str, ...]


class ShardedRun:
    """The shards of one run in ``folder`` (created if needed). See the module docstring.

    Args:
        folder: run folder on storage every rank can read (one per run; holds the manifest and shard files).
        keys: the items, as strings (for instance image paths), in the order the results should come back.
            Duplicates are allowed.
        shard_size: items per shard (the unit of atomic saving and of recomputation after a kill).
        fingerprint: JSON-serialisable description of everything that changes the results (settings, model files);
            a folder holding shards of another fingerprint is refused.
        rank: this process; default :meth:`RankInfo.from_env`.
    """

    def __init__(self, folder: str | os.PathLike, keys: Sequence[str], *, shard_size: int = 16,
                 fingerprint: Mapping[str, Any] | None = None, rank: RankInfo | None = None) -> None:
        self.folder = Path(folder)
        self.rank = rank or RankInfo.from_env()
        self._created = False
        self._made: list[Path] = []  # folders this rank created (the run folder's missing parents, the run folder)

        def describe() -> None:
            if int(shard_size) < 1:
                raise ValueError(f"shard_size must be >= 1, got {shard_size}")
            self.keys = [str(k) for k in keys]
            self.shard_size = int(shard_size)
            self.fingerprint = json.loads(json.dumps(dict(fingerprint or {}), sort_keys=True))
            self.shards = [
                Shard(i, start, tuple(self.keys[start:start + self.shard_size]))
                for i, start in enumerate(range(0, len(self.keys), self.shard_size))
            ]

        def make() -> str:
            self._open()
            return uuid.uuid4().hex

        # every rank builds the run itself (its node's view of the folder), in two steps each followed by an
        # exchange of verdicts (every_rank), so that any rank failing anywhere in the build (its description of the
        # run, a folder refused on its node, the folder it cannot create, the attempt token) ends every rank at once
        # with its error, ``rank N: ...`` under a process group, instead of leaving the others waiting in the next
        # collective or for its shards: first each rank only looks (its description of the run, compared with
        # rank 0's, then the folder; nothing is created while some rank may still refuse), then each creates or
        # opens the folder; when that fails on some rank, each rank takes back what it created. Without a group
        # each step is the plain call.
        every_rank(describe, self.rank)
        self._check_same_run()  # every rank's run is rank 0's (else the ranks raced on a new folder's manifest)
        every_rank(self._check_folder, self.rank)
        try:
            token = every_rank(make, self.rank)
        except BaseException:
            self._undo()
            raise
        # this attempt's token (rank 0's, on every rank of a process group): a failure marker counts only for the
        # attempt that wrote it. Without a group every rank has None (each cleared its own old marker in _open).
        self.attempt = agree(token) if _group_size() > 1 else None

    def _check_same_run(self) -> None:
        """Under a process group: refuse, on every rank (:func:`every_rank`, ``rank N: ...``), a rank whose run is not
        rank 0's (other items, shard size or fingerprint), naming the first item or fingerprint entry that differs.
        Such ranks raced on a new folder's manifest (each wrote its own; the last one won) and their shards mixed
        results of different runs. Rank 0's items travel only when some rank's differ."""
        if _group_size() == 1:
            return
        import torch.distributed as dist

        mine = self.manifest()
        first = agree(mine)
        differ = [None] * dist.get_world_size()
        dist.all_gather_object(differ, mine["items_sha256"] != first["items_sha256"])
        their_keys = agree(self.keys) if any(differ) else None
        every_rank(lambda: self._refuse_other_run(first, their_keys), self.rank)

    def _refuse_other_run(self, first: dict[str, Any], their_keys: list[str] | None) -> None:
        """``ValueError`` when this rank's manifest is not ``first`` (rank 0's; ``their_keys``: rank 0's items when
        some rank's differ), naming what differs first."""
        mine = self.manifest()
        advice = "every rank must run over rank 0's items with the same settings (cartoonseg.sharding.agree)"
        if mine["version"] != first["version"]:
            raise ValueError(f"this rank writes sharded runs of format {mine['version']}, rank 0 of "
                             f"{first['version']}: install the same cartoonseg on every node")
        if their_keys is not None and mine["items_sha256"] != first["items_sha256"]:
            at = next((i for i, (a, b) in enumerate(zip(self.keys, their_keys)) if a != b), None)
            if at is not None:
                raise ValueError(f"the items differ from rank 0's: item {at} is {self.keys[at]!r} here, "
                                 f"{their_keys[at]!r} on rank 0; {advice}")
            raise ValueError(f"the items differ from rank 0's: {len(self.keys)} here, {len(their_keys)} on rank 0 "
                             f"(the first {min(len(self.keys), len(their_keys))} agree); {advice}")
        if mine["shard_size"] != first["shard_size"]:
            raise ValueError(f"shard_size {mine['shard_size']} differs from rank 0's {first['shard_size']}; {advice}")
        if mine["fingerprint"] != first["fingerprint"]:
            ours, theirs = mine["fingerprint"], first["fingerprint"]
            key = next(k for k in sorted(set(ours) | set(theirs)) if ours.get(k, _MISSING) != theirs.get(k, _MISSING))
            shown = [repr(f.get(key)) if key in f else "absent" for f in (ours, theirs)]
            raise ValueError(f"the fingerprint differs from rank 0's in {key!r}: {shown[0][:200]} here, "
                             f"{shown[1][:200]} on rank 0; {advice}")

    def _check_folder(self) -> None:
        """The refusals of the run folder that need no writing: it (or a parent) is not a folder, or it holds a
        manifest of another run or of someone else (:meth:`_check_manifest`)."""
        if os.path.lexists(self.folder) and not self.folder.is_dir():
            raise ValueError(f"work folder {self.folder} exists and is not a folder; choose another work folder "
                             f"(--work-dir)")
        missing = self._missing_parents()
        parent = missing[-1].parent if missing else self.folder.parent  # the nearest existing one
        if os.path.lexists(parent) and not parent.is_dir():
            raise ValueError(f"work folder {self.folder} cannot be created: {parent} is not a folder; choose another "
                             f"work folder (--work-dir)")
        if self.folder.is_dir():
            self._check_manifest(write=False)

    def _missing_parents(self) -> list[Path]:
        """The run folder's parents that do not exist, nearest first (the last one's parent exists, or is the root)."""
        missing = []
        parent = self.folder.parent
        while not os.path.lexists(parent) and parent != parent.parent:
            missing.append(parent)
            parent = parent.parent
        return missing

    def _open(self) -> None:
        """Create or check the run folder and its manifest, clear this rank's failure marker of an earlier attempt."""
        for path in reversed(self._missing_parents()):  # the parents this rank creates (another rank may create one first)
            try:
                path.mkdir()
                self._made.append(path)
            except FileExistsError:
                pass
        try:  # exactly one process creates the folder, however many ranks race here; it marks the folder
            self.folder.mkdir()
            self._created = True
            self._made.append(self.folder)
        except FileExistsError:
            self._created = False
        if self._created:
            write_atomic(self.folder / CREATED_MARK, "")
        self._check_manifest()
        self._forget_failure()

    def _undo(self) -> None:
        """Take back what this rank created while building the run (the folder with its mark and manifest, the
        parents it made), when some rank failed: nothing of a run that never started stays on any node. Only
        folders this rank created, and only when empty then; best effort."""
        if self._created:
            self.remove()  # the manifest, the mark and the folder when this run's manifest is there
            mark = self.folder / CREATED_MARK
            if mark.is_file() and not mark.is_symlink() and mark.stat().st_size == 0:
                mark.unlink()  # failed before its manifest was written: the mark alone is ours
        for path in reversed(self._made):
            try:
                path.rmdir()
            except OSError:
                pass  # not empty (something else lives there) or gone: keep it

    # ------------------------------------------------------------------ manifest
    def manifest(self) -> dict[str, Any]:
        digest = hashlib.sha256("\n".join(self.keys).encode("utf-8")).hexdigest()
        return {"version": FORMAT_VERSION, "num_items": len(self.keys), "items_sha256": digest,
                "shard_size": self.shard_size, "fingerprint": self.fingerprint}

    def _check_manifest(self, write: bool = True) -> None:
        """Refuse a manifest in the folder that is not this run's; with ``write``, write it when there is none."""
        path = self.folder / MANIFEST
        mine = self.manifest()
        advice = f"use another work folder (--work-dir) for this run; {self.folder} and its files are left as they are"
        if os.path.lexists(path):
            try:
                theirs = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ValueError(f"{path} is not the manifest of a sharded run ({exc}); {advice}") from None
            if not isinstance(theirs, dict) or theirs.get("version") != FORMAT_VERSION or not all(
                    k in theirs for k in _IDENTITY):
                raise ValueError(f"{path} is not the manifest of a sharded run of this version; {advice}")
            changed = sorted(k for k in _IDENTITY if mine.get(k) != theirs.get(k))
            if changed:
                raise ValueError(f"{self.folder} holds the shards of a different run (differs in: "
                                 f"{', '.join(changed)}); {advice}")
            return
        # every rank computes the same manifest, so concurrent writers write identical bytes (whether the folder
        # was new is the CREATED_MARK file of the rank that created it)
        if write:
            write_atomic(path, json.dumps(mine, sort_keys=True, indent=1))

    # ------------------------------------------------------------------ shards
    def path(self, shard: Shard | int) -> Path:
        index = shard.index if isinstance(shard, Shard) else int(shard)
        return self.folder / f"shard-{index:06d}.json"

    def is_done(self, shard: Shard | int) -> bool:
        return self.path(shard).exists()

    def mine(self) -> list[Shard]:
        """This rank's shards (finished or not)."""
        return [s for s in self.shards if s.index % self.rank.world_size == self.rank.rank]

    def pending(self) -> list[Shard]:
        """This rank's shards that are not finished, in order. Removes temporary files that a killed run of the
        same shards left behind (only this rank writes these shards, so no other process is using them; something
        else of that name, a folder, is not ours and stays). Runs inside :meth:`reporting_failures`: a rank that
        fails here leaves its failure marker too, so rank 0 does not wait for its shards until the stall time-out."""
        todo = []
        with self.reporting_failures():
            for shard in self.mine():
                final = self.path(shard)
                for tmp in self.folder.glob(final.name + _TMP_MARK + "*"):
                    if _tmp_of(final.name).match(tmp.name) and not tmp.is_dir():
                        tmp.unlink(missing_ok=True)
                if not final.exists():
                    todo.append(shard)
        return todo

    def save(self, shard: Shard, results: Sequence[Any]) -> Path:
        """Write the results of ``shard`` (one per key, in key order) atomically."""
        if len(results) != len(shard.keys):
            raise ValueError(f"shard {shard.index} has {len(shard.keys)} items but {len(results)} results were given")
        record = {"version": FORMAT_VERSION, "shard": shard.index, "keys": list(shard.keys), "results": list(results)}
        return write_atomic(self.path(shard), json.dumps(record, sort_keys=True, allow_nan=False))

    def load(self, shard: Shard) -> list[Any]:
        """The results of a finished shard (checked against the manifest's items)."""
        path = self.path(shard)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read shard {path}: {exc}") from None
        if record.get("keys") != list(shard.keys) or len(record.get("results", ())) != len(shard.keys):
            raise ValueError(f"shard {path} does not hold items {shard.start}..{shard.start + len(shard.keys) - 1} "
                             f"of this run; delete it to recompute it")
        return record["results"]

    def missing(self) -> list[Shard]:
        return [s for s in self.shards if not self.is_done(s)]

    # ------------------------------------------------------------------ failures
    def failure_path(self, rank: int | None = None) -> Path:
        """The failure marker of ``rank`` (default this rank): ``failed-rank-<r>.json`` in the run folder."""
        return self.folder / f"failed-rank-{self.rank.rank if rank is None else int(rank)}.json"

    def _marker(self, error: BaseException | str) -> dict[str, Any]:
        if isinstance(error, BaseException):
            text = str(error).strip() or type(error).__name__
            kind = f"{type(error).__module__}.{type(error).__qualname__}"
        else:
            text, kind = str(error), None
        return {"version": FORMAT_VERSION, "failure": True, "rank": self.rank.rank,
                "world_size": self.rank.world_size, "host": socket.gethostname(), "attempt": self.attempt,
                "items_sha256": self.manifest()["items_sha256"], "type": kind, "error": text[:4000]}

    def fail(self, error: BaseException | str) -> Path | None:
        """Write this rank's failure marker (rank, host, ``error``) so that rank 0's :meth:`wait` stops with it.
        Best effort: a marker that cannot be written (the folder is gone, the disk is full) is skipped (None), the
        caller goes on raising its own error."""
        try:
            return write_atomic(self.failure_path(), json.dumps(self._marker(error), sort_keys=True))
        except OSError:
            return None

    @contextmanager
    def reporting_failures(self) -> Iterator[None]:
        """Run the block (this rank's share of the work); when it raises, write this rank's failure marker
        (:meth:`fail`), then let the exception go on. Every caller computes its shards inside one of these, so rank 0
        learns of a rank that failed instead of waiting for its shards."""
        try:
            yield
        except BaseException as exc:  # Ctrl-C and SystemExit end the rank too: rank 0 must hear of it
            self.fail(exc)
            raise

    def _forget_failure(self) -> None:
        """Remove this rank's marker left by an earlier attempt (only this rank writes it)."""
        path = self.failure_path()
        if self._is_marker(path):
            path.unlink(missing_ok=True)

    def _is_marker(self, path: Path) -> dict[str, Any] | None:
        """The content of the failure marker ``path`` when it is one of this run's items, else None."""
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if (isinstance(record, dict) and record.get("failure") is True and record.get("version") == FORMAT_VERSION
                and record.get("items_sha256") == self.manifest()["items_sha256"]):
            return record
        return None

    def failures(self) -> list[dict[str, Any]]:
        """The failure markers of this attempt (see :meth:`fail`), lowest rank first."""
        found = []
        try:
            names = sorted(os.listdir(self.folder))
        except OSError:
            return []
        for name in names:
            if _FAILED.fullmatch(name):
                record = self._is_marker(self.folder / name)
                if record is not None and record.get("attempt") == self.attempt:
                    found.append(record)
        return sorted(found, key=lambda r: r.get("rank", 0))

    def wait(self, timeout: float | None = None, poll: float = 0.5, log: Callable[[str], None] | None = None,
             stall: float | None = None) -> None:
        """Block until every shard of every rank is finished.

        Raises:
            RankFailedError: a rank wrote its failure marker (:meth:`reporting_failures`): names the rank, its host
                and its error (the lowest such rank).
            TimeoutError: after ``timeout`` seconds in all (None: no such limit), or when no shard has finished for
                ``stall`` seconds (default :func:`stall_timeout`: :data:`STALL_TIMEOUT_S`, one hour, or
                ``CARTOONSEG_STALL_TIMEOUT``): a rank that died without a word (killed, out of memory at the system
                level) or wrote its shards where this rank cannot see them (a run folder not on shared storage).
        In every case the finished shards stay in the run folder: the same command resumes from them."""
        stall = stall_timeout() if stall is None else float(stall)
        start = last = time.monotonic()
        told = False
        left = None
        while True:
            missing = self.missing()
            if not missing:
                return
            ranks = sorted({s.index % self.rank.world_size for s in missing})
            failed = self.failures()
            if failed:
                first = failed[0]
                error = str(first.get("error", "")).strip().splitlines() or ["(no message)"]
                raise RankFailedError(
                    f"rank {first.get('rank')} (host {first.get('host')}) failed: {error[0]}; {len(missing)} shard(s) "
                    f"are not finished; the {len(self.shards) - len(missing)} finished shard(s) stay in {self.folder}: "
                    f"fix the cause and run the same command again to resume")
            now = time.monotonic()
            if left is None or len(missing) < left:
                left, last = len(missing), now
            if log is not None and not told:
                log(f"waiting for {len(missing)} shard(s) of rank(s) {ranks}")
                told = True
            if timeout is not None and now - start > timeout:
                raise TimeoutError(f"{len(missing)} shard(s) still missing in {self.folder} after {timeout:.0f}s "
                                   f"(first: {self.path(missing[0]).name})")
            if now - last > stall:
                raise TimeoutError(
                    f"no shard finished in {self.folder} for {stall:.0f}s and no rank reported a failure: "
                    f"{len(missing)} shard(s) of rank(s) {ranks} are missing (first: {self.path(missing[0]).name}); a "
                    f"rank was killed, or writes its shards where rank 0 cannot see them (the work folder must be on "
                    f"storage all nodes share). The finished shards stay: run the same command again to resume "
                    f"(CARTOONSEG_STALL_TIMEOUT=SECONDS sets this limit)")
            time.sleep(poll)

    def results(self) -> list[Any]:
        """Every item's result, in item order (all shards must be finished)."""
        missing = self.missing()
        if missing:
            raise RuntimeError(f"{len(missing)} shard(s) not finished in {self.folder}; call wait() first")
        out: list[Any] = []
        for shard in self.shards:
            out.extend(self.load(shard))
        return out

    def iter_results(self) -> Iterator[tuple[str, Any]]:
        """``(key, result)`` pairs in item order."""
        return zip(self.keys, self.results())

    def remove(self) -> None:
        """Delete what this run wrote in its folder: the shard files holding this run's items, the failure markers of
        its ranks (of any attempt), the temporary files of all these and of the manifest, and the manifest; then the
        folder itself when it is empty and the run created it.
        Any other file (the user's, another program's, a shard file that does not hold this run's items) stays.
        Call once the merged output is safely written."""
        manifest = self.folder / MANIFEST
        try:
            recorded = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # not our manifest (any more): nothing here is known to be ours
        if not isinstance(recorded, dict) or any(recorded.get(k) != v for k, v in self.manifest().items()):
            return
        names = {self.path(s).name: s for s in self.shards}
        try:
            entries = sorted(os.listdir(self.folder))
        except OSError:
            return
        for name in entries:
            path = self.folder / name
            shard = names.get(name)
            if shard is not None:
                if self._holds(path, shard):
                    path.unlink(missing_ok=True)
            elif _FAILED.fullmatch(name):
                if self._is_marker(path):  # a failure marker of this run (of any attempt)
                    path.unlink(missing_ok=True)
            else:
                base = name.split(_TMP_MARK)[0]
                if (base in names or base in (MANIFEST, CREATED_MARK) or _FAILED.fullmatch(base)) and _tmp_of(
                        base).match(name) and not path.is_dir():  # a folder of that name is not ours
                    path.unlink(missing_ok=True)
        manifest.unlink(missing_ok=True)
        mark = self.folder / CREATED_MARK
        if mark.is_file() and not mark.is_symlink() and mark.stat().st_size == 0:
            mark.unlink()
            try:
                self.folder.rmdir()  # only when empty
            except OSError:
                pass  # something else lives there: keep it

    def _holds(self, path: Path, shard: Shard) -> bool:
        """Whether the file ``path`` is this run's finished ``shard`` (as :meth:`save` wrote it)."""
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return (isinstance(record, dict) and record.get("version") == FORMAT_VERSION
                and record.get("shard") == shard.index and record.get("keys") == list(shard.keys))


def run_sharded(folder: str | os.PathLike, keys: Sequence[str], fn: Callable[[str], Any], *, shard_size: int = 16,
                fingerprint: Mapping[str, Any] | None = None, rank: RankInfo | None = None, progress: bool = True,
                desc: str = "", wait_timeout: float | None = None) -> list[Any] | None:
    """Run ``fn(key)`` for this rank's unfinished shards, save each shard atomically; on rank 0 wait for all ranks
    and return every result in item order (None on other ranks).

    ``progress`` shows one tqdm bar per rank (position = local rank; hidden when stderr is not a terminal).
    """
    run = ShardedRun(folder, keys, shard_size=shard_size, fingerprint=fingerprint, rank=rank)
    rank = run.rank
    todo = run.pending()
    total = sum(len(s.keys) for s in run.mine())
    with run.reporting_failures(), progress_bar(total, total - sum(len(s.keys) for s in todo), rank, desc,
                                                enabled=progress) as bar:
        for shard in todo:
            results = []
            for key in shard.keys:
                results.append(fn(key))
                bar.update(1)
            run.save(shard, results)
    if not rank.is_main:
        return None
    run.wait(timeout=wait_timeout)
    return run.results()


def progress_bar(total: int, done: int, rank: RankInfo, desc: str = "", *, enabled: bool = True):
    """A tqdm bar for this rank (``rank r/n`` prefix, one line per local rank), disabled when ``enabled`` is False
    or stderr is not a terminal."""
    from tqdm.auto import tqdm

    label = f"rank {rank.rank}/{rank.world_size}" if rank.world_size > 1 else ""
    label = f"{desc} {label}".strip()
    return tqdm(total=total, initial=done, desc=label or None, position=rank.local_rank, leave=rank.is_main,
                disable=not enabled or not sys.stderr.isatty(), dynamic_ncols=True, unit="item")
