"""Locating and downloading WD tagger folders (Hugging Face repo layout) with the project's download rules.

A tagger folder holds ``model.safetensors`` (timm state dict), ``selected_tags.csv`` and, optionally,
``config.json`` (timm format). Files are fetched one by one through :func:`cartoonseg.hub.resolve_weights`, so the
rules are those of the detector weights: download only when missing and allowed, never when ``HF_HUB_OFFLINE`` is
set, sha256 checked where the digest is known, and failures raise an error (a
:class:`~cartoonseg.hub.WeightsUnavailableError`) naming the URL and the path the file was expected at.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..hub import WeightsSpec, WeightsUnavailableError, hub_url, resolve_weights
from ..tags import DEFAULT_TAGGER_REPO  # its one home; re-exported here

__all__ = [
    "DEFAULT_TAGGER_REPO",
    "TAGGER_FILES",
    "REQUIRED_FILES",
    "KNOWN_SHA256",
    "TaggerUnavailableError",
    "default_download_dir",
    "resolve_tagger_dir",
]

TAGGER_FILES = ("config.json", "selected_tags.csv", "model.safetensors")
REQUIRED_FILES = ("selected_tags.csv", "model.safetensors")
# sha256 of released files, checked after download. The v3 files could not be fetched while this was written, so
# no digest is pinned yet; add ("owner/repo", "file"): "hex" once verified (huggingface_hub checks LFS etags itself).
KNOWN_SHA256: dict[tuple[str, str], str] = {}

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class TaggerUnavailableError(WeightsUnavailableError):
    """The tagger files are missing and could not (or may not) be downloaded."""


def default_download_dir() -> Path:
    """``~/.cache/cartoonseg/tagger`` (the parent of downloaded tagger folders when none is given)."""
    return Path.home() / ".cache" / "cartoonseg" / "tagger"


def _missing(folder: Path) -> list[str]:
    return [name for name in REQUIRED_FILES if not (folder / name).is_file()]


def resolve_tagger_dir(
    source: str | os.PathLike = DEFAULT_TAGGER_REPO,
    *,
    download_dir: str | os.PathLike | None = None,
    allow_download: bool = True,
    revision: str = "main",
) -> Path:
    """Find (or fetch) a tagger folder.

    Args:
        source: an existing folder, or a Hugging Face repo id (``owner/name``).
        download_dir: parent folder for repo ids; the files live in ``download_dir/<name>/`` (default
            :func:`default_download_dir`).
        allow_download: if False, a repo id must already be present under ``download_dir``.
        revision: repo branch, tag or commit.

    Returns:
        The folder containing ``model.safetensors`` and ``selected_tags.csv`` (and ``config.json`` if published).

    Raises:
        FileNotFoundError: ``source`` is a folder without the required files, or neither folder nor repo id.
        TaggerUnavailableError: a repo id whose files are absent and may not or could not be downloaded; the
            message names the URL and the expected path.
    """
    path = Path(os.fspath(source)).expanduser()
    if path.is_dir():
        missing = _missing(path)
        if missing:
            raise FileNotFoundError(
                f"tagger folder {path} lacks {missing}; it needs {list(REQUIRED_FILES)} (+ optional config.json), "
                f"laid out like https://huggingface.co/{DEFAULT_TAGGER_REPO}"
            )
        return path
    repo_id = os.fspath(source)
    if not _REPO_ID.match(repo_id):
        raise FileNotFoundError(f"tagger {repo_id!r} is neither an existing folder nor a Hugging Face repo id")
    folder = Path(download_dir).expanduser() if download_dir is not None else default_download_dir()
    folder = folder / repo_id.split("/")[1]
    if not _missing(folder):
        return folder
    for name in TAGGER_FILES:
        if (folder / name).is_file():
            continue
        spec = WeightsSpec(name, KNOWN_SHA256.get((repo_id, name)), repo_id=repo_id, revision=revision)
        try:
            # the full path: a file of that name in the working directory must not stand in for the download
            resolve_weights(folder / name, download_dir=folder, allow_download=allow_download, spec=spec)
        except WeightsUnavailableError as error:
            if name in REQUIRED_FILES:
                urls = ", ".join(hub_url(repo_id, n, revision) for n in REQUIRED_FILES)
                raise TaggerUnavailableError(f"tagger {repo_id}: {error} (needs {urls} in {folder})") from error
            # config.json is optional: without it the wd-swinv2-tagger-v3 architecture is assumed.
    return folder
