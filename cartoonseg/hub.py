"""Locating and downloading the paper's released weights.

The weights live on the Hugging Face hub in ``dreMaz/AnimeInstanceSegmentation``. :func:`resolve_weights` finds a
local file first (an explicit path, or the released file name in one of the search folders) and downloads only
when allowed, not disabled (``CARTOONSEG_NO_DOWNLOAD=1``, for every command and node) and not offline
(``HF_HUB_OFFLINE=1``); every download is checked against the published sha256.
Failures raise :class:`WeightsUnavailableError` naming the URL and the path the file is expected at, so a user can
fetch it by hand.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ._env import env_seconds

__all__ = [
    "REPO_ID",
    "WeightsSpec",
    "RELEASED_WEIGHTS",
    "WeightsUnavailableError",
    "resolve_weights",
    "sha256_of",
    "check_download_allowed",
    "hub_url",
    "is_offline",
    "download_blocker",
    "downloads_disabled",
    "resolve_all",
]

REPO_ID = "dreMaz/AnimeInstanceSegmentation"


@dataclass(frozen=True)
class WeightsSpec:
    """A released file: its name in the hub repo and its sha256 (None when unknown)."""

    filename: str
    sha256: str | None
    repo_id: str = REPO_ID
    revision: str = "main"

    @property
    def url(self) -> str:
        return hub_url(self.repo_id, self.filename, self.revision)


RELEASED_WEIGHTS: dict[str, WeightsSpec] = {
    "detector": WeightsSpec("rtmdetl_e60.ckpt", "8052de69f831188cbe7331500c9cf73252d73f2a22da9c2eb9f6414d0366fb36"),
    "refiner": WeightsSpec("refine_last.ckpt", "c41a7c1cd54e63c1492d273466a540b6bff71ce9c2a01877add52bec554635a6"),
}


class WeightsUnavailableError(RuntimeError):
    """The weights are not on disk and cannot (or may not) be downloaded.

    Attributes:
        missing: ``[(file name, URL, local path it belongs at)]`` of the files concerned (empty when unknown).
        reason: why they could not be fetched ("downloading is disabled", "HF_HUB_OFFLINE is set", no network, ...).
    """

    def __init__(self, message: str, *, missing: Sequence[tuple[str, str, str]] = (), reason: str = "") -> None:
        super().__init__(message)
        self.missing = list(missing)
        self.reason = reason

    @classmethod
    def combine(cls, errors: Sequence[WeightsUnavailableError]) -> WeightsUnavailableError:
        """One error naming every unavailable file of ``errors`` (and their shared reason once)."""
        if len(errors) == 1:
            return errors[0]
        reasons = {e.reason for e in errors}
        if len(reasons) == 1 and all(e.missing for e in errors):
            steps = "; ".join(f"download {url} and place it at {target}" for e in errors for _, url, target in e.missing)
            names = ", ".join(name for e in errors for name, _, _ in e.missing)
            return cls(f"{len(errors)} weights files are not on disk ({names}) and {reasons.pop()}: {steps}",
                       missing=[m for e in errors for m in e.missing], reason=errors[0].reason)
        return cls(f"{len(errors)} weights files are unavailable: " + " | ".join(map(str, errors)),
                   missing=[m for e in errors for m in e.missing])


def hub_url(repo_id: str, filename: str, revision: str = "main") -> str:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    return f"{endpoint}/{repo_id}/resolve/{revision}/{filename}"


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for no network."""
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


#: seconds the reachability check of the hub waits (``CARTOONSEG_NET_TIMEOUT``)
NET_TIMEOUT = 3.0
_REACHABLE: dict[tuple[str, int], str | None] = {}


def net_timeout() -> float:
    """:data:`NET_TIMEOUT`, or ``CARTOONSEG_NET_TIMEOUT`` when set (seconds, in (0, 600]); ``ValueError`` naming the
    variable for anything else."""
    return env_seconds("CARTOONSEG_NET_TIMEOUT", NET_TIMEOUT, upper=600.0)


def _unreachable(url: str) -> str | None:
    """None when a TCP connection to ``url``'s host opens within :data:`NET_TIMEOUT` seconds, else why not. Checked
    once per host and process: without network, huggingface_hub would spend ~20 s in retries per file."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "huggingface.co"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if (host, port) not in _REACHABLE:
        timeout = net_timeout()
        try:
            with socket.create_connection((host, port), timeout=timeout):
                _REACHABLE[(host, port)] = None
        except OSError as exc:
            _REACHABLE[(host, port)] = f"{host}:{port} cannot be reached ({type(exc).__name__}: {exc})"
    return _REACHABLE[(host, port)]


def downloads_disabled() -> bool:
    """True when ``CARTOONSEG_NO_DOWNLOAD`` is set (to anything but ``0``): no cartoonseg download, in the library,
    the CLI or the nodes."""
    return os.environ.get("CARTOONSEG_NO_DOWNLOAD", "").strip() not in ("", "0")


def download_blocker(url: str = "") -> str | None:
    """Why nothing can be downloaded from the hub right now (``CARTOONSEG_NO_DOWNLOAD``, ``HF_HUB_OFFLINE``, or no
    network to the hub, found in seconds), or None. ``url`` is a file URL on the hub (its host is checked)."""
    if downloads_disabled():
        return "CARTOONSEG_NO_DOWNLOAD is set"
    if is_offline():
        return "HF_HUB_OFFLINE is set"
    problem = _unreachable(url or hub_url(REPO_ID, "x"))
    if problem:
        return f"there is no network ({problem}; set HF_HUB_OFFLINE=1 to skip this check)"
    return None


def check_download_allowed(what: str, how_to: str, allow_download: bool = True, *, url: str = "",
                           missing: Sequence[tuple[str, str, str]] = ()) -> None:
    """Raise :class:`WeightsUnavailableError` (``what`` is not on disk, then ``how_to``) when a missing file may not
    be fetched: downloads disabled (argument or ``CARTOONSEG_NO_DOWNLOAD``), ``HF_HUB_OFFLINE`` set, no network to the hub (``url``'s host, probed once), or
    ``huggingface_hub`` not installed. ``missing`` is recorded on the error (see its attribute)."""
    reason = "downloading is disabled" if not allow_download else download_blocker(url)
    if reason:
        raise WeightsUnavailableError(f"{what} is not on disk and {reason}; {how_to}", missing=missing, reason=reason)
    try:
        import huggingface_hub  # noqa: F401
    except ImportError as exc:
        reason = "huggingface_hub is not installed"
        raise WeightsUnavailableError(f"{reason}, cannot fetch {what}; {how_to}", missing=missing,
                                      reason=reason) from exc


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _spec_for(name: str) -> WeightsSpec | None:
    if name in RELEASED_WEIGHTS:
        return RELEASED_WEIGHTS[name]
    for spec in RELEASED_WEIGHTS.values():
        if spec.filename == name:
            return spec
    return None


def resolve_weights(
    name_or_path: str | os.PathLike,
    *,
    search_dirs: Sequence[str | os.PathLike] = (),
    download_dir: str | os.PathLike | None = None,
    allow_download: bool = True,
    spec: WeightsSpec | None = None,
    verify: bool = True,
) -> Path:
    """Return a local path for a weights file, downloading the released file when needed and allowed.

    Args:
        name_or_path: an existing file path; or ``"detector"`` / ``"refiner"``; or a released file name
            (``rtmdetl_e60.ckpt``, ``refine_last.ckpt``); or any file name together with ``spec``.
        search_dirs: folders searched (in order) for the file name before downloading.
        download_dir: where a download is placed (default: the first search dir, else
            ``~/.cache/cartoonseg``).
        allow_download: False never touches the network.
        spec: description of a non-released file to fetch (repo id, file name, sha256).
        verify: check the sha256 of downloaded files (files already on disk are trusted as they are).

    Raises:
        WeightsUnavailableError: not found locally and download not allowed/offline/failed, or a checksum
            mismatch; the message names the URL and the expected local path.
    """
    name = str(name_or_path)
    candidate = Path(name).expanduser()
    is_bare_name = candidate.name == name  # "rtmdetl_e60.ckpt": look in the search folders before the cwd
    if not is_bare_name and candidate.is_file():
        return candidate
    spec = spec or _spec_for(name)
    filename = spec.filename if spec else candidate.name
    for folder in search_dirs:
        found = Path(folder).expanduser() / filename
        if found.is_file():
            return found
    if candidate.is_file():
        return candidate
    if spec is None:
        raise WeightsUnavailableError(
            f"weights file {name!r} not found (searched: {', '.join(map(str, search_dirs)) or 'no folders'}); "
            f"released files are {', '.join(s.filename for s in RELEASED_WEIGHTS.values())}"
        )
    target_dir = Path(download_dir or (search_dirs[0] if search_dirs else Path.home() / ".cache" / "cartoonseg"))
    target = target_dir.expanduser() / spec.filename
    how_to = f"download {spec.url} and place it at {target}"
    if target.is_file():  # an earlier download into download_dir (files on disk are trusted)
        return target
    check_download_allowed(spec.filename, how_to, allow_download, url=spec.url,
                           missing=[(spec.filename, spec.url, str(target))])
    _download_verified(spec, target, verify=verify, how_to=how_to)
    return target


def resolve_all(requests: Sequence[tuple[str | os.PathLike, dict]]) -> list[Path]:
    """:func:`resolve_weights` for several files (``(name_or_path, keyword arguments)`` each): every file is tried,
    and when some are unavailable one :class:`WeightsUnavailableError` names all of them at once (with the one
    reason when they share it), instead of one file per attempt."""
    paths: list[Path] = []
    errors: list[WeightsUnavailableError] = []
    for name, kwargs in requests:
        try:
            paths.append(resolve_weights(name, **kwargs))
        except WeightsUnavailableError as exc:
            errors.append(exc)
    if errors:
        raise WeightsUnavailableError.combine(errors)
    return paths


def _download_verified(spec: WeightsSpec, target: Path, *, verify: bool = True, how_to: str = "") -> Path:
    """Download ``spec`` to ``target`` so that ``target`` only ever holds a complete, checked file.

    huggingface_hub writes into a private temporary folder next to ``target`` (same file system); the sha256 is
    checked there and only then is the file renamed onto ``target`` with :func:`os.replace` (atomic). A failed,
    interrupted or tampered download never replaces a file already at ``target``; a checksum mismatch is kept as
    ``<target>.sha256-mismatch`` for inspection. The temporary folder is named like every cartoonseg temporary
    (:mod:`cartoonseg.outputs`), so the partial data of a killed download is removed by the next download into that
    folder (writer gone, or older than a day); a concurrent download (other torchrun ranks) is left alone.
    A folder at ``target`` (refused before downloading) or an unwritable models folder is a
    :class:`WeightsUnavailableError` naming the URL and ``target``, like every other failure here.
    """
    from huggingface_hub import hf_hub_download

    from .outputs import temporary_folder

    how_to = how_to or f"download {spec.url} and place it at {target}"
    missing = [(spec.filename, spec.url, str(target))]
    if target.exists() and not target.is_file():  # a folder where the file belongs: never downloaded onto
        raise WeightsUnavailableError(f"cannot download {spec.filename}: {target} is a folder (or another non-file), "
                                      f"not the weights file; move it away, or {how_to}", missing=missing)
    try:  # an unwritable (or uncreatable) models folder: one error with the manual fallback, not a raw OSError
        tmp_dir = temporary_folder(target.parent, spec.filename)
    except OSError as exc:
        raise WeightsUnavailableError(f"cannot download {spec.filename} into {target.parent} "
                                      f"({type(exc).__name__}: {exc}); {how_to}", missing=missing) from exc
    try:
        try:
            downloaded = Path(
                hf_hub_download(repo_id=spec.repo_id, filename=spec.filename, revision=spec.revision,
                                local_dir=str(tmp_dir))
            )
        except Exception as exc:  # network errors, 404, auth: all mean "not available", with the manual fallback
            raise WeightsUnavailableError(
                f"downloading {spec.filename} failed ({type(exc).__name__}: {exc}); {how_to}"
            ) from exc
        if verify and spec.sha256:
            actual = sha256_of(downloaded)
            if actual != spec.sha256:
                bad = target.with_name(target.name + ".sha256-mismatch")
                os.replace(downloaded, bad)
                raise WeightsUnavailableError(
                    f"{spec.filename} from {spec.url} has sha256 {actual}, expected {spec.sha256}; the download "
                    f"was moved to {bad}. {how_to}"
                )
        try:
            os.replace(downloaded, target)
        except OSError as exc:  # e.g. a folder created at target during the download
            raise WeightsUnavailableError(f"cannot place the downloaded {spec.filename} at {target} "
                                          f"({type(exc).__name__}: {exc}); {how_to}", missing=missing) from exc
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return target
