"""The one output policy of every command that writes files.

Every writer (``segment``, ``convert``, ``depth``, ``depth-pool``, ``inpaint``, ``inpaint-refine``, ``kenburns``,
``style``, ``puppet``, ``annotate``, training exports and dataset synthesis) goes through this module, so the same
guarantees hold everywhere:

1. **Never write over an input.** An output that *is* one of the command's inputs (same file by
   :func:`os.path.samefile`, so hard links, symlinks and ``a/../a`` spellings count) or a result folder that
   *contains* one is refused with :class:`OutputError`, also with ``overwrite=True``.
2. **Never replace what cartoonseg did not write.** Every folder cartoonseg writes into gets a small manifest,
   :data:`MANIFEST` (``.cartoonseg-outputs.json``), listing the files written there with their size and
   modification time. An existing file is *ours* when the manifest of its folder lists it unchanged; an existing
   folder is ours when everything in it is ours (an empty folder counts). An output folder named by ``--out DIR``
   must be new, empty or ours; an existing file may be replaced only when it is ours. Anything else raises
   :class:`OutputError` naming the foreign files, unless ``overwrite=True`` (``--overwrite``); even then a foreign
   file is only replaced by a new output of the same name, never deleted. A folder is replaced *as a whole* (point 5)
   only when its manifest marks it as an earlier result folder: a folder of other cartoonseg outputs (say
   ``segment``'s per-image folders, named by mistake as ``kenburns --out``) is refused unless ``overwrite``, and even
   then the new files are written into it, the others kept.
3. **Unique, stable names.** :func:`unique_names` maps inputs to result names: the file stem when no other input of
   the run has the same stem (compared case-insensitively, as macOS/Windows file systems do), otherwise
   ``<stem>-<8 hex digits of the absolute path>``; so ``a/x.png b/x.jpg c/x_1.png`` give ``x-…``, ``x-…`` and
   ``x_1``, and the same inputs always give the same names. A stem longer than :data:`MAX_STEM_BYTES` is cut (and
   gets the digits), so a command's own suffixes still fit the file system's 255-byte names; a stem starting with
   ``.cartoonseg-`` (this module's own file names) starts with ``_cartoonseg-`` instead, and the stems ``.`` and
   ``..`` (of ``..png``, ``...png``) become ``_`` and ``__`` (with the digits).
4. **Atomic writes.** A file is written to a temporary file in its final folder (same suffix, so image libraries
   pick the same format), flushed to disk, then renamed over the final name with :func:`os.replace`. A result
   folder is built as a temporary folder and renamed into place as a whole. A full disk (or file-size limit) is one
   ``OSError`` naming the file and saying that nothing was lost (the earlier file stays, nothing else changed).
5. **A rerun replaces its own earlier outputs completely.** A result folder is swapped for the new one (no stale
   ``mask_NNN.png``; its manifest marks it as a result folder); files written as a *group* (``group=`` argument, e.g. all outputs of one input image) drop
   the members of the group that an earlier run wrote and this run did not.
6. **Interrupted runs** leave no half-written result under a final name (point 4), and their temporary files and
   folders (``.cartoonseg-tmp-<host>-<pid>-<rand>-<name>[<suffix>]``) are removed the next time any command opens
   that folder (when the writing process is gone, or after a day for other hosts on shared storage).

API (all paths may be ``str`` or :class:`os.PathLike`; ``inputs`` are the command's input paths)::

    from cartoonseg import outputs

    # one file (--out FILE): check before the slow work, write at the end
    outputs.check_file(path, inputs=[src], overwrite=args.overwrite)
    outputs.write(path, io.write_image, image, inputs=[src], overwrite=args.overwrite)  # any writer(path, *args)
    outputs.write(path, io.write_grey, depth, 16, inputs=..., overwrite=...)
    outputs.write_json(path, obj, inputs=..., overwrite=...)                  # also write_text, write_bytes
    with outputs.output_file(path, inputs=..., overwrite=...) as tmp:         # or write the temporary path yourself
        torch.save(obj, tmp)

    # a folder of results (--out DIR): checked once, then per result
    with outputs.OutputFolder(out_dir, inputs=images, overwrite=args.overwrite) as out:
        for path, name in zip(images, outputs.unique_names(images)):
            with out.result_dir(name) as res:                       # OUT/<name>/, swapped in on success
                res.write("overlay.png", io.write_image, rgb)
                res.write_json("instances.json", record)
            out.write(f"{name}_style.png", io.write_image, rgb, group=name)  # or loose files, grouped per input

    # one folder that is the result (kenburns --out FRAMES/)
    outputs.check_folder(folder, inputs=..., overwrite=...)
    with outputs.result_dir(folder, inputs=..., overwrite=...) as res:
        io.write_frames(frames, res.path)   # anything written into the new folder is recorded as ours

    outputs.check_distinct(args.out, args.json)   # two outputs of one command must differ

    outputs.add_overwrite_argument(parser)   # the shared --overwrite option of every writing command

Several commands may write *different* files into one folder at the same time: each manifest update re-reads the
manifest and applies only its own changes under a lock file next to it (``.cartoonseg-outputs.lock``, there only for
those milliseconds), so no command drops another's entries. Two commands writing the *same* name at once is not
supported (the later rename wins; sharded runs write one file per rank through :func:`output_file` with distinct names
and let rank 0 write the folder's shared files).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "MANIFEST",
    "MAX_STEM_BYTES",
    "OutputError",
    "OutputFolder",
    "add_overwrite_argument",
    "atomic_path",
    "check_distinct",
    "check_file",
    "check_folder",
    "check_not_input",
    "check_outputs_apart",
    "fsync_dir",
    "output_file",
    "result_dir",
    "temporary_folder",
    "unique_names",
    "write",
    "write_bytes",
    "write_error",
    "write_json",
    "write_text",
]

#: name of the manifest cartoonseg keeps in every folder it writes into
MANIFEST = ".cartoonseg-outputs.json"
_MANIFEST_VERSION = 1
_MAX_MANIFEST_BYTES = 64 << 20  # a hostile or corrupt manifest is not read (the folder then counts as foreign)
_TMP_KIND = "cartoonseg-tmp"
_OLD_KIND = "cartoonseg-old"
_TMP_RE = re.compile(r"^\.cartoonseg-(?:tmp|old)-(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[0-9a-f]{6}-")
_ORPHAN_AGE_S = 24 * 3600
_OS = os.name  # which process-liveness check applies (tests stand in for Windows through it)
#: lock file next to the manifest while one process updates it (created exclusively, removed again within milliseconds)
_LOCK = ".cartoonseg-outputs.lock"
_LOCK_STALE_S = 60.0  # a lock this old (its holder died on another host, or hangs) is broken
_LOCK_WAIT_S = 600.0
#: longest result-name stem (UTF-8 bytes) :func:`unique_names` keeps; room is left for a hash and a command's suffixes
MAX_STEM_BYTES = 150
_OWN_PREFIX = ".cartoonseg-"  # the manifest and the temporaries: no result name may start with it
_HOST = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]


class OutputError(ValueError):
    """A write refused by the output policy (it would replace an input or a file cartoonseg did not write)."""


# ---------------------------------------------------------------------------------------------- helpers
def _paths(items: Iterable[str | os.PathLike]) -> list[Path]:
    return [Path(p) for p in items]


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b) or a.resolve() == b.resolve()


def check_not_input(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), *, folder: bool = False) -> None:
    """Raise :class:`OutputError` when ``path`` is one of ``inputs`` (or, with ``folder=True``, contains one)."""
    path = Path(path)
    for src in _paths(inputs):
        if _same(path, src):
            raise OutputError(f"refusing to write {path}: it is an input of this command ({src})")
        if folder:
            try:
                inside = Path(os.path.realpath(src)).is_relative_to(os.path.realpath(path))
            except OSError:
                inside = False
            if inside:
                raise OutputError(f"refusing to replace folder {path}: it holds an input of this command ({src})")


def check_outputs_apart(outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike]) -> None:
    """Raise :class:`OutputError` when an output folder is an input, lies inside an input folder or contains an input
    (stricter than :func:`check_not_input`): for writers whose next run walks its input folders recursively (the
    dataset scripts), which must never read their own outputs as inputs."""
    ins = [(i, Path(os.path.realpath(i))) for i in inputs if i is not None]
    for out in outputs:
        real = Path(os.path.realpath(out))
        for given, src in ins:
            if real == src:
                how = "is"
            elif real.is_relative_to(src):
                how = "lies inside"
            elif src.is_relative_to(real):
                how = "contains"
            else:
                continue
            raise OutputError(f"refusing to write into {out}: it {how} the input {given}; "
                              f"choose an output folder apart from the inputs")


def unique_names(inputs: Sequence[str | os.PathLike], *, reserved: Iterable[str] = ()) -> list[str]:
    """One result name per input (see point 3 of the module docstring). Inputs that are the same file give the same
    name; names never equal (case-insensitively) one of ``reserved`` or each other."""
    paths = _paths(inputs)
    absolute = [os.path.abspath(p) for p in paths]
    real = [os.path.normcase(os.path.realpath(p)) for p in paths]  # one file however it is spelled (symlinks too)
    taken = {r.casefold() for r in reserved}
    stems: dict[str, set[str]] = {}
    for p, r in zip(paths, real):
        stems.setdefault(p.stem.casefold(), set()).add(r)
    names: list[str] = []
    by_path: dict[str, str] = {}
    for p, a, r in zip(paths, absolute, real):
        if r in by_path:
            names.append(by_path[r])
            continue
        base, changed = _safe_stem(p.stem)
        name = base if not changed and len(stems[p.stem.casefold()]) == 1 and base.casefold() not in taken else None
        digits = 8
        while name is None or name.casefold() in taken:
            name = f"{base}-{hashlib.sha1(a.encode('utf-8', 'surrogateescape')).hexdigest()[:digits]}"
            digits += 2
            if digits > 40:
                raise OutputError(f"cannot find a unique output name for {p}")
        taken.add(name.casefold())
        by_path[r] = name
        names.append(name)
    return names


def _safe_stem(stem: str) -> tuple[str, bool]:
    """``stem`` cut to :data:`MAX_STEM_BYTES` (at a character boundary) and kept off this module's own names and off
    ``.`` / ``..`` (the stems of ``..png`` and ``...png``, which name no folder of their own); and whether it changed
    (a changed stem always gets the hash digits)."""
    out = "_" + stem[1:] if stem.casefold().startswith(_OWN_PREFIX) else stem
    if out in ("", ".", ".."):
        out = "_" * max(1, len(out))
    raw = out.encode("utf-8", "surrogateescape")
    if len(raw) > MAX_STEM_BYTES:
        out = raw[:MAX_STEM_BYTES].decode("utf-8", "ignore") or "_"  # a character cut in two is dropped
    return out, out != stem


def add_overwrite_argument(parser) -> None:
    """Add the shared ``--overwrite`` option to an argparse parser."""
    parser.add_argument("--overwrite", action="store_true",
                        help="allow writing into folders and over files that cartoonseg did not write (inputs are "
                             "never overwritten; foreign files are replaced only by outputs of the same name)")


def _tmp_name(name: str, kind: str = _TMP_KIND, *, folder: bool = False) -> str:
    """``.cartoonseg-tmp-<host>-<pid>-<rand>-<name>``: a file keeps its suffix (writers pick formats by it); a folder
    gets none (its name has no dots), so writers that treat suffix-less paths as folders do so."""
    suffix = "" if folder else Path(name).suffix
    if not re.fullmatch(r"\.[A-Za-z0-9]{1,16}", suffix or "."):
        suffix = ""
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", name[: len(name) - len(suffix)])[:60]
    return f".{kind}-{_HOST}-{os.getpid()}-{secrets.token_hex(3)}-{stem}{suffix}"


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host may still run. In doubt: True (a lock or temporary of a live writer must
    never be taken away; the age rules still clear what a dead one left)."""
    if _OS == "nt":
        return _windows_pid_alive(pid)
    if _OS != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: someone else's live process
        return True
    return pid != 0


_WIN_STILL_ACTIVE = 259  # GetExitCodeProcess's code of a running process
_WIN_ERROR_INVALID_PARAMETER = 87  # OpenProcess's error for a pid no process has


class _WinProcessAPI:
    """The three kernel32 calls :func:`_windows_pid_alive` needs, through ctypes (standard library; never
    ``os.kill``, which on Windows terminates the process)."""

    def __init__(self) -> None:
        import ctypes
        from ctypes import wintypes

        self._ctypes = ctypes
        k = ctypes.WinDLL("kernel32", use_last_error=True)
        k.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
        k.OpenProcess.restype = wintypes.HANDLE
        k.GetExitCodeProcess.argtypes = (wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD))
        k.GetExitCodeProcess.restype = wintypes.BOOL
        k.CloseHandle.argtypes = (wintypes.HANDLE,)
        k.CloseHandle.restype = wintypes.BOOL
        self._k, self._dword = k, wintypes.DWORD

    def open(self, pid: int) -> tuple[Any, int]:
        """``(handle or None, last error)``; PROCESS_QUERY_LIMITED_INFORMATION is enough, also for other users'."""
        handle = self._k.OpenProcess(0x1000, False, pid)
        return handle, (0 if handle else self._ctypes.get_last_error())

    def exit_code(self, handle) -> int | None:
        code = self._dword()
        return int(code.value) if self._k.GetExitCodeProcess(handle, self._ctypes.byref(code)) else None

    def close(self, handle) -> None:
        self._k.CloseHandle(handle)


def _win_process_api() -> _WinProcessAPI | None:
    try:
        return _WinProcessAPI()
    except (ImportError, OSError, AttributeError, ValueError):  # not Windows (or no kernel32): cannot tell
        return None


def _windows_pid_alive(pid: int) -> bool:
    """Windows' answer to ``os.kill(pid, 0)``: dead only when OpenProcess says no process has this pid, or the
    process has exited (its handle is still held by someone); anything else (access denied, an API failure, an exit
    code equal to STILL_ACTIVE) counts as alive."""
    if pid <= 0:
        return pid != 0
    api = _win_process_api()
    if api is None:
        return True
    handle, error = api.open(pid)
    if not handle:
        return error != _WIN_ERROR_INVALID_PARAMETER
    try:
        code = api.exit_code(handle)
    finally:
        api.close(handle)
    return code is None or code == _WIN_STILL_ACTIVE


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _ours(entry: dict[str, Any] | None, key: list[int] | None) -> bool:
    """Whether a manifest entry vouches for a file whose stat is ``key``: the stat it recorded, or the one before
    (a replacement killed between the manifest write and the rename leaves our previous file in place)."""
    return entry is not None and key is not None and (entry["stat"] == key or entry.get("prev") == key)


def _stat_key(path: Path) -> list[int] | None:
    try:
        st = path.lstat()
    except OSError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


def _read_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """``{name: {"stat": [size, mtime_ns], "group": str | None[, "prev": [size, mtime_ns]]}}``; empty when absent,
    unreadable or malformed. ``prev`` is the file's previous stat while a replacement of it is being renamed in."""
    path = folder / MANIFEST
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > _MAX_MANIFEST_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    out: dict[str, dict[str, Any]] = {}
    if isinstance(files, dict):
        for name, entry in files.items():
            if (isinstance(name, str) and isinstance(entry, dict) and isinstance(entry.get("stat"), list)
                    and len(entry["stat"]) == 2 and all(type(v) is int for v in entry["stat"])
                    and "/" not in name and "\\" not in name and name not in ("", ".", "..")):
                group = entry.get("group")
                out[name] = {"stat": entry["stat"], "group": group if isinstance(group, str) else None}
                prev = entry.get("prev")
                if isinstance(prev, list) and len(prev) == 2 and all(type(v) is int for v in prev):
                    out[name]["prev"] = prev
    return out


def _result_mark(folder: Path) -> bool:
    """Whether ``folder``'s manifest marks it as one result folder (swapped in whole by :meth:`OutputFolder.result_dir`,
    so a rerun may swap it again)."""
    path = folder / MANIFEST
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > _MAX_MANIFEST_BYTES:
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("result") is True


def _replaceable(folder: Path) -> bool:
    """An existing folder a result may be swapped in over: empty (but for our manifest and temporaries) or marked
    as an earlier result folder."""
    try:
        names = [e.name for e in os.scandir(folder)]
    except OSError:
        return False
    return all(_is_own(n) for n in names) or _result_mark(folder)


def _not_a_result(folder: Path) -> OutputError:
    shown = sorted(e.name for e in os.scandir(folder) if not _is_own(e.name))
    return OutputError(f"refusing to replace folder {folder} as a whole: it is not an earlier result folder of "
                       f"cartoonseg but holds other outputs ({_describe([folder / n for n in shown])}); choose "
                       f"another output, or pass --overwrite to write into it (its other files are kept)")


def _write_manifest(folder: Path, entries: dict[str, dict[str, Any]], *, result: bool = False) -> None:
    data = {"cartoonseg_outputs": _MANIFEST_VERSION,
            "note": "files cartoonseg wrote in this folder; a rerun may replace them (see cartoonseg/outputs.py)",
            **({"result": True} if result else {}),
            "files": {k: entries[k] for k in sorted(entries)}}
    tmp = folder / _tmp_name(MANIFEST)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=0)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / MANIFEST)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


#: errno -> what it means for a write: the disk (or the file-size limit) is full, not a fault of the file
_FULL = {code: text for code, text in ((errno.ENOSPC, "no space left on the device"),
                                       (errno.EFBIG, "the file is larger than the file-size limit"),
                                       (getattr(errno, "EDQUOT", None), "the disk quota is exceeded")) if code}
_OS_ERROR_RE = re.compile(r"\(os error (\d+)\)|\[Errno (\d+)\]")  # writers in Rust/C (safetensors) only say this


def _full_disk_error(exc: BaseException, target: Path) -> OSError | None:
    """An ``OSError`` naming ``target`` when ``exc`` says the disk or the file-size limit is full (also from writers
    that report it only in their message, like safetensors); None for any other error."""
    code = exc.errno if isinstance(exc, OSError) else None
    if code not in _FULL:
        m = _OS_ERROR_RE.search(str(exc))
        code = int(m[1] or m[2]) if m else None
    if code not in _FULL:
        return None
    kept = "keeps its earlier content" if os.path.lexists(target) else "was not created"
    return OSError(code, f"cannot write {target}: {_FULL[code]} ({os.strerror(code)}); nothing was lost: {target} "
                         f"{kept} and no other file was changed; free some space (or raise the limit) and rerun")


def _writer_os_error(exc: BaseException, target: Path) -> OSError | None:
    """An ``OSError`` naming ``target`` for a writer outside Python (safetensors' Rust, C extensions) that reports
    an OS error (permission denied, read-only file system, ...) only in its message, as its own exception type that
    the CLIs' one-line error policy does not know (it printed a traceback); None for Python's own ``OSError`` (it
    keeps its type) and for messages without an OS error code."""
    if isinstance(exc, OSError):
        return None
    m = _OS_ERROR_RE.search(str(exc))
    if not m:
        return None
    code = int(m[1] or m[2])
    kept = "keeps its earlier content" if os.path.lexists(target) else "was not created"
    return OSError(code, f"cannot write {target}: {os.strerror(code)} ({type(exc).__name__}: {exc}); {target} "
                         f"{kept} and no other file was changed")


def write_error(exc: BaseException, target: Path) -> OSError | None:
    """The error a failed write of ``target`` is told as (one ``error:`` line of the CLIs, no traceback): an
    ``OSError`` naming ``target`` and what was kept, for a full disk or file-size limit and for an OS error that a
    writer outside Python (safetensors' Rust) reports only in its message; None for any other error (raise it as
    it is). Used by :class:`OutputFolder` and the training checkpoints."""
    return _full_disk_error(exc, target) or _writer_os_error(exc, target)


def _is_temporary(name: str) -> bool:
    return _TMP_RE.match(name) is not None


def _is_own(name: str) -> bool:
    """This module's own files in a folder (manifest, its lock, temporaries): never outputs, never foreign."""
    return name in (MANIFEST, _LOCK) or _is_temporary(name)


@contextlib.contextmanager
def _manifest_lock(folder: Path) -> Iterator[None]:
    """Hold :data:`_LOCK` in ``folder`` while its manifest is read, merged and replaced, so that commands writing
    different files into one folder at the same time keep each other's entries (Linux, macOS and Windows, also on
    shared storage: an exclusively created file, not an OS lock). A lock left by a dead process of this host, or older
    than :data:`_LOCK_STALE_S`, is broken."""
    path = folder / _LOCK
    token = f"{_HOST}-{os.getpid()}-{secrets.token_hex(4)}"
    deadline = time.monotonic() + _LOCK_WAIT_S
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            _break_stale_lock(path)
            if time.monotonic() > deadline:
                raise OutputError(f"cannot update {folder / MANIFEST}: {path} has been locked by another cartoonseg "
                                  f"command for {_LOCK_WAIT_S:.0f} s; delete it if no command writes there") from None
            time.sleep(0.005 + secrets.randbelow(20) / 1000)
            continue
        try:
            os.write(fd, token.encode())
        finally:
            os.close(fd)
        break
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if path.read_text(encoding="utf-8", errors="replace") == token:  # still ours (not broken as stale)
                path.unlink()


def _break_stale_lock(path: Path) -> None:
    try:
        seen = path.read_text(encoding="utf-8", errors="replace")
        age = time.time() - path.stat().st_mtime
    except OSError:
        return
    m = re.fullmatch(r"(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[0-9a-f]{8}", seen)
    dead = m is not None and m["host"] == _HOST and int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"]))
    if not dead and age < _LOCK_STALE_S:
        return
    aside = path.parent / _tmp_name(_LOCK)
    try:
        os.rename(path, aside)  # atomic: of several breakers one takes the stale lock away
    except OSError:
        return
    try:
        if aside.read_text(encoding="utf-8", errors="replace") != seen:  # a live lock taken just now: put it back
            with contextlib.suppress(OSError):
                os.link(aside, path)
    finally:
        with contextlib.suppress(OSError):
            aside.unlink()


def _remove_orphans(folder: Path) -> list[Path]:
    """Remove temporaries of dead writers (this host) or older than a day (any host). Returns what was removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        m = _TMP_RE.match(entry.name)
        if not m:
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        mine = m["host"] == _HOST
        if (mine and int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"]))) or age > _ORPHAN_AGE_S:
            _remove(Path(entry.path))
            removed.append(Path(entry.path))
    return removed


def _foreign(folder: Path, depth: int = 0, limit: int = 5) -> list[Path]:
    """Entries of ``folder`` (recursively) that cartoonseg did not write; at most ``limit`` of them."""
    if depth > 16:
        return [folder]
    manifest = _read_manifest(folder)
    found: list[Path] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return [folder]
    for entry in entries:
        if len(found) >= limit:
            break
        if _is_own(entry.name):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            found += _foreign(path, depth + 1, limit - len(found))
        elif not _ours(manifest.get(entry.name), _stat_key(path)):
            found.append(path)
    return found


def _file_stats(folder: Path) -> dict[str, list[int] | None]:
    """``{name: [size, mtime_ns]}`` of the regular files directly in ``folder`` (manifest and temporaries left out)."""
    out = {}
    for entry in os.scandir(folder):
        if not _is_own(entry.name) and entry.is_file(follow_symlinks=False):
            out[entry.name] = _stat_key(Path(entry.path))
    return out


def _claim_tree(folder: Path, depth: int = 0) -> None:
    """Record every file under a folder this process created (a fresh result folder) in the manifests."""
    if depth > 16:
        raise OutputError(f"result folder nesting too deep at {folder}")
    entries = _read_manifest(folder)
    changed = False
    for entry in os.scandir(folder):
        if _is_own(entry.name):
            continue
        if entry.is_dir(follow_symlinks=False):
            _claim_tree(Path(entry.path), depth + 1)
        elif entries.get(entry.name, {}).get("stat") != _stat_key(Path(entry.path)):
            entries[entry.name] = {"stat": _stat_key(Path(entry.path)), "group": None}
            changed = True
    if changed or not (folder / MANIFEST).exists():
        _write_manifest(folder, entries, result=_result_mark(folder))


def _describe(paths: list[Path]) -> str:
    return ", ".join(str(p) for p in paths[:4]) + (" ..." if len(paths) > 4 else "")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same suffix) that is renamed to ``path`` when the block succeeds and
    removed when it fails: the bare atomic write, without the ownership checks (the library's writers in
    :mod:`cartoonseg.io` use it; commands wrap them in :class:`OutputFolder` / :func:`output_file`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / _tmp_name(path.name)
    try:
        yield tmp
        if os.path.lexists(tmp):
            os.replace(tmp, path)
    finally:
        _remove(tmp)


def temporary_folder(parent: str | os.PathLike, name: str) -> Path:
    """Make a private folder for a half-written output inside ``parent`` (e.g. a download), named like every
    cartoonseg temporary so that, should the writer be killed, the next call here (or an :class:`OutputFolder` over
    ``parent``) removes it; the temporaries of dead writers there are removed first, a live writer's are kept.
    The caller deletes the folder when done. OSError where ``parent`` cannot be made or written."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(parent)
    folder = parent / _tmp_name(name, folder=True)
    folder.mkdir()
    return folder


# ----------------------------------------------------------------------------------------- the folder
class OutputFolder:
    """A folder that receives outputs under the policy of this module.

    Opening it removes orphaned temporaries and, for an existing folder, checks that everything in it was written by
    cartoonseg (``check_foreign=True``, the rule for a folder named by ``--out DIR``) unless ``overwrite``. Every
    write is atomic and recorded in the folder's manifest before the rename, so an interrupted run never leaves a
    file that the rerun would take for a foreign one.

    Args:
        path: the folder (created with its parents when missing).
        inputs: the command's inputs (never written over).
        overwrite: allow foreign files in the folder and replacing foreign files of the same name.
        check_foreign: refuse an existing folder holding foreign files (False: only same-named files are checked,
            for writing single files into a user's folder).
        replace: on :meth:`close`, delete every earlier output recorded here that this session did not rewrite
            (the folder *is* one result).
    """

    def __init__(self, path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = (), overwrite: bool = False,
                 check_foreign: bool = True, replace: bool = False) -> None:
        self.path = Path(path)
        self.inputs = _paths(inputs)
        self.overwrite = bool(overwrite)
        self.replace = replace
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"output folder {self.path} exists and is not a folder")
        if self.path.is_dir():
            _remove_orphans(self.path)
            if check_foreign and not overwrite:
                foreign = _foreign(self.path)
                if foreign:
                    raise OutputError(
                        f"output folder {self.path} holds files cartoonseg did not write ({_describe(foreign)}); "
                        f"choose a new or empty folder, or pass --overwrite (inputs are never overwritten)")
        # the folders this call creates (the folder and missing parents), removed again if the command fails before
        # writing anything into them (a bad option found after opening must not leave an empty folder behind)
        self._made = [p for p in (self.path, *self.path.parents) if not os.path.lexists(p)]
        self.path.mkdir(parents=True, exist_ok=True)
        self._entries = _read_manifest(self.path)
        self._result = _result_mark(self.path)  # kept in every manifest this folder writes
        self._written: set[str] = set()
        self._groups: set[str] = set()
        self._dropped: dict[str, list[int]] = {}  # entries this session removed: name -> the stat they recorded
        self._closed = False

    # ------------------------------------------------------------------------------ checks
    def _check_name(self, name: str) -> Path:
        if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
                or _is_own(name) or "\0" in name):
            raise OutputError(f"invalid output name {name!r}")
        return self.path / name

    def is_ours(self, name: str) -> bool:
        """True when ``name`` in this folder was written by cartoonseg and is unchanged (or is missing)."""
        target = self.path / name
        if not os.path.lexists(target):
            return True
        if target.is_dir() and not target.is_symlink():
            return not _foreign(target)
        return _ours(self._entries.get(name), _stat_key(target))

    def _check_target(self, name: str, *, folder: bool = False) -> Path:
        target = self._check_name(name)
        check_not_input(target, self.inputs, folder=folder)
        if os.path.lexists(target) and not self.overwrite and not self.is_ours(name):
            what = _describe(_foreign(target)) if target.is_dir() and not target.is_symlink() else str(target)
            raise OutputError(f"refusing to replace {target}: it holds files cartoonseg did not write ({what}); "
                              f"choose another output or pass --overwrite")
        return target

    # ------------------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def file(self, name: str, *, group: str | None = None) -> Iterator[Path]:
        """Yield a temporary path (same folder and suffix) to write; on success it becomes ``name`` atomically."""
        if self._closed:
            raise OutputError(f"output folder {self.path} is already closed")
        target = self._check_target(name)
        if target.is_dir() and not target.is_symlink():
            raise OutputError(f"refusing to replace folder {target} with a file")
        tmp = self.path / _tmp_name(name)
        try:
            yield tmp
            if not tmp.is_file():
                raise OutputError(f"nothing was written for {target}")
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            entry = {"stat": _stat_key(tmp), "group": group}
            current = _stat_key(target)
            if _ours(self._entries.get(name), current):
                entry["prev"] = current  # the file being replaced stays ours until the rename
            self._entries[name] = entry
            self._written.add(name)  # (a failed write stays recorded: its previous file is still vouched for)
            self._save()  # recorded first: a kill before the rename leaves nothing foreign
            os.replace(tmp, target)  # a symlink at ``target`` is replaced itself, never written through
            fsync_dir(self.path)
            entry.pop("prev", None)  # the manifest on disk drops it at the next write (close)
        except Exception as exc:
            # "[Errno 28]" alone names neither the file nor the damage; a Rust writer's error is no OSError at all
            full = write_error(exc, target)
            if full is None:
                raise
            raise full from exc
        finally:
            _remove(tmp)
        if group is not None:
            self._groups.add(group)

    def write_bytes(self, name: str, data: bytes, *, group: str | None = None) -> Path:
        with self.file(name, group=group) as tmp:
            tmp.write_bytes(data)
        return self.path / name

    def write_text(self, name: str, text: str, *, group: str | None = None) -> Path:
        return self.write_bytes(name, text.encode("utf-8"), group=group)

    def write_json(self, name: str, obj: Any, *, group: str | None = None, indent: int | None = 1) -> Path:
        return self.write_text(name, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n", group=group)

    def write(self, name: str, writer: Any, *args: Any, group: str | None = None, **kwargs: Any) -> Path:
        """``writer(temporary_path, *args, **kwargs)`` (e.g. :func:`cartoonseg.io.write_grey`), then renamed to
        ``name`` under the policy."""
        with self.file(name, group=group) as tmp:
            writer(tmp, *args, **kwargs)
        return self.path / name

    @contextlib.contextmanager
    def result_dir(self, name: str) -> Iterator[OutputFolder]:
        """Yield an :class:`OutputFolder` for the result folder ``name``: built under a temporary name and swapped in
        on success, replacing an earlier result folder of ours as a whole. Over a foreign folder, or one of other
        cartoonseg outputs that is not a result folder (both only with ``overwrite``), the files are written in place
        instead, and the files there that this result does not rewrite are kept (our earlier ones of a result
        folder are dropped)."""
        target = self._check_target(name, folder=True)
        if os.path.lexists(target) and not (target.is_dir() and not target.is_symlink()):
            raise OutputError(f"refusing to replace {target} with a folder: it is not a folder")
        whole = not target.is_dir() or _replaceable(target)
        if not whole and not self.overwrite:
            raise _not_a_result(target)
        if target.is_dir() and (not whole or _foreign(target)):  # overwrite=True: keep the others' files, in place
            before = _file_stats(target)
            with OutputFolder(target, inputs=self.inputs, overwrite=True, check_foreign=False, replace=whole) as res:
                yield res
                for written, key in _file_stats(target).items():  # files writers put straight into ``res.path``
                    if written not in res._written and before.get(written) != key:
                        res._entries[written] = {"stat": key, "group": None}
                        res._written.add(written)
            self._written.add(name)
            return
        tmp = self.path / _tmp_name(name, folder=True)
        try:
            tmp.mkdir()
            res = OutputFolder(tmp, inputs=self.inputs, overwrite=False, check_foreign=False)
            yield res
            res.close()
            _claim_tree(tmp)  # files writers put straight into ``res.path`` are ours too (the folder was new)
            _write_manifest(tmp, _read_manifest(tmp), result=True)
            old = self.path / _tmp_name(name, _OLD_KIND, folder=True)
            if target.is_dir():
                os.rename(target, old)
            os.rename(tmp, target)
            fsync_dir(self.path)
            _remove(old)
        finally:
            _remove(tmp)
        self._written.add(name)

    # ------------------------------------------------------------------------------ closing
    def close(self) -> None:
        """Delete stale outputs (earlier members of the groups written now; with ``replace``, every earlier output not
        rewritten) that are still ours, and write the manifest."""
        if self._closed:
            return
        self._closed = True
        for name, entry in list(self._entries.items()):
            if name in self._written:
                continue
            target = self.path / name
            stale = self.replace or (entry["group"] is not None and entry["group"] in self._groups)
            if not os.path.lexists(target):
                del self._entries[name]
            elif stale and _ours(entry, _stat_key(target)):
                check_not_input(target, self.inputs)
                target.unlink()
                del self._entries[name]
            else:
                continue
            self._dropped[name] = entry["stat"]
        if self._written or self._dropped:
            self._save()

    def _save(self) -> None:
        """Write the manifest: what is on disk now (another command may have recorded its files since this one read
        it) with this session's changes applied, under the folder's lock."""
        with _manifest_lock(self.path):
            merged = _read_manifest(self.path)
            for name, stat in self._dropped.items():
                if name not in self._written and merged.get(name, {}).get("stat") == stat:
                    del merged[name]  # only the entry this session saw: a newer one of another command stays
            for name in self._written:
                if name in self._entries:
                    merged[name] = self._entries[name]
            _write_manifest(self.path, merged, result=self._result)

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def abort(self) -> None:
        """End a failed session (what ``with`` does on an exception; call it where a ``with`` block cannot be used):
        what was written is kept and recorded, nothing is deleted (the rerun replaces it); folders this call created
        are removed again when nothing was written into them (a failure before the first write leaves no trace)."""
        if not self._closed:  # keep what was written, drop nothing: the rerun replaces it
            self._closed = True
            if self._made and not self._entries:  # made by this call and nothing written: leave no trace
                for folder in self._made:  # the folder first, then its parents
                    with contextlib.suppress(OSError):
                        folder.rmdir()  # only an empty folder goes
                return
            if self._written:
                with contextlib.suppress(OSError, OutputError):
                    self._save()


# ------------------------------------------------------------------------------------------ single files
def check_file(path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = (), overwrite: bool = False) -> Path:
    """Check, before any work starts, that the single output file ``path`` may be written (the same rules as
    :func:`output_file`, which checks again when it writes). Returns ``path``; creates nothing."""
    path = Path(path)
    if not path.name or path.name in (".", ".."):
        raise OutputError(f"output {path} names a folder, expected a file name")
    check_not_input(path, inputs)
    if path.is_dir() and not path.is_symlink():
        raise OutputError(f"output {path} is a folder, expected a file name")
    if os.path.lexists(path) and not overwrite:
        entry = _read_manifest(path.parent).get(path.name)
        if not _ours(entry, _stat_key(path)):
            raise OutputError(f"refusing to replace {path}: cartoonseg did not write it (or it changed since); "
                              f"choose another output or pass --overwrite")
    return path


def check_folder(path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = (), overwrite: bool = False,
                 result: bool = True, whole: bool = False) -> Path:
    """Check, before any work starts, that the folder ``path`` may receive outputs: never one holding an input
    (``result=True``); an existing folder must be empty or ours unless ``overwrite``. With ``whole=True`` (the folder
    is swapped in as one result: :func:`result_dir`) an existing one must also be empty or an earlier result folder
    unless ``overwrite``. Returns ``path``; creates nothing."""
    path = Path(path)
    check_not_input(path, inputs, folder=result)
    if os.path.lexists(path):
        if not path.is_dir() or path.is_symlink():
            raise OutputError(f"output folder {path} exists and is not a folder")
        foreign = [] if overwrite else _foreign(path)
        if foreign:
            raise OutputError(f"output folder {path} holds files cartoonseg did not write ({_describe(foreign)}); "
                              f"choose a new or empty folder, or pass --overwrite (inputs are never overwritten)")
        if whole and not overwrite and not _replaceable(path):
            raise _not_a_result(path)
    return path


def check_distinct(*paths: str | os.PathLike | None) -> None:
    """Raise :class:`OutputError` when two outputs of one command name the same file."""
    seen: dict[str, str] = {}
    for p in paths:
        if p is None:
            continue
        key = os.path.normcase(os.path.realpath(p))  # a symlinked spelling of one file is that file
        if key in seen:
            raise OutputError(f"two outputs of this command are the same file: {seen[key]} and {p}")
        seen[key] = str(p)


@contextlib.contextmanager
def output_file(path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = (),
                overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path for the single output file ``path``; on success it is renamed to ``path``. The folder
    around it may hold the user's other files; only ``path`` itself must be new or ours (or ``overwrite``)."""
    path = Path(path)
    if not path.name or path.name in (".", ".."):
        raise OutputError(f"output {path} names a folder, expected a file name")
    check_not_input(path, inputs)
    with OutputFolder(path.parent if str(path.parent) else Path("."), inputs=inputs, overwrite=overwrite,
                      check_foreign=False) as folder:  # a failure leaves no new empty folder behind
        with folder.file(path.name) as tmp:
            yield tmp


def write_bytes(path: str | os.PathLike, data: bytes, **policy: Any) -> Path:
    """Write one output file atomically under the policy (``inputs=``, ``overwrite=``)."""
    with output_file(path, **policy) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, **policy: Any) -> Path:
    return write_bytes(path, text.encode("utf-8"), **policy)


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1, **policy: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n", **policy)


def write(path: str | os.PathLike, writer: Any, *args: Any, inputs: Iterable[str | os.PathLike] = (),
          overwrite: bool = False, **kwargs: Any) -> Path:
    """One output file under the policy, written by ``writer(temporary_path, *args, **kwargs)`` (any function that
    takes a path, e.g. :func:`cartoonseg.io.write_grey` or :func:`cartoonseg.io.write_frames` for ``.webp``/``.mp4``)."""
    with output_file(path, inputs=inputs, overwrite=overwrite) as tmp:
        writer(tmp, *args, **kwargs)
    return Path(path)


@contextlib.contextmanager
def result_dir(path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = (),
               overwrite: bool = False) -> Iterator[OutputFolder]:
    """Yield an :class:`OutputFolder` for a folder that is one result as a whole (e.g. Ken Burns PNG frames): built
    under a temporary name next to ``path`` and swapped in on success (see :meth:`OutputFolder.result_dir`)."""
    path = Path(os.path.abspath(path))
    with OutputFolder(path.parent, inputs=inputs, overwrite=overwrite, check_foreign=False) as parent:
        with parent.result_dir(path.name) as res:
            yield res
