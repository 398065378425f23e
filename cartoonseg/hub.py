"""Locating and downloading the paper's released weights.

The weights live on the Hugging Face hub in ``dreMaz/AnimeInstanceSegmentation``. :func:`resolve_weights` finds a
local file first (an explicit path, or the released file name in one of the search folders) and downloads only
when allowed and not offline (``HF_HUB_OFFLINE=1``); every download is checked against the published sha256.
Failures raise :class:`WeightsUnavailableError` naming the URL and the path the file is expected at, so a user can
fetch it by hand.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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
    """The weights are not on disk and cannot (or may not) be downloaded."""


def hub_url(repo_id: str, filename: str, revision: str = "main") -> str:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    return f"{endpoint}/{repo_id}/resolve/{revision}/{filename}"


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for no network."""
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def check_download_allowed(what: str, how_to: str, allow_download: bool = True) -> None:
    """Raise :class:`WeightsUnavailableError` (``what`` is not on disk, then ``how_to``) when a missing file may not
    be fetched: downloads disabled, ``HF_HUB_OFFLINE`` set, or ``huggingface_hub`` not installed."""
    if not allow_download:
        raise WeightsUnavailableError(f"{what} is not on disk and downloading is disabled; {how_to}")
    if is_offline():
        raise WeightsUnavailableError(f"{what} is not on disk and HF_HUB_OFFLINE is set; {how_to}")
    try:
        import huggingface_hub  # noqa: F401
    except ImportError as exc:
        raise WeightsUnavailableError(f"huggingface_hub is not installed, cannot fetch {what}; {how_to}") from exc


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
    check_download_allowed(spec.filename, how_to, allow_download)
    _download_verified(spec, target, verify=verify, how_to=how_to)
    return target


def _download_verified(spec: WeightsSpec, target: Path, *, verify: bool = True, how_to: str = "") -> Path:
    """Download ``spec`` to ``target`` so that ``target`` only ever holds a complete, checked file.

    huggingface_hub writes into a private temporary folder next to ``target`` (same file system); the sha256 is
    checked there and only then is the file renamed onto ``target`` with :func:`os.replace` (atomic). A failed,
    interrupted or tampered download never replaces a file already at ``target``; a checksum mismatch is kept as
    ``<target>.sha256-mismatch`` for inspection.
    """
    from huggingface_hub import hf_hub_download

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{spec.filename}.", suffix=".partial", dir=target.parent))
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
        os.replace(downloaded, target)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return target
