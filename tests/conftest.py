"""Shared fixtures.

Golden data are read in place from ``../shared/reference`` (or ``$CARTOONSEG_REFERENCE``); they are never
copied into the repository. When ``CI`` is set, missing golden data fail the tests instead of skipping them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    env = os.environ.get("CARTOONSEG_REFERENCE")
    return Path(env) if env else REPO.parent / "shared" / "reference"


@pytest.fixture(scope="session")
def reference() -> Path:
    """Folder of golden files; fails under CI when absent, skips otherwise."""
    path = reference_dir()
    if not path.is_dir():
        message = f"golden reference folder not found: {path} (set CARTOONSEG_REFERENCE)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # The golden files were produced with 2 threads; tolerances cover 1 vs 2, so just pin it.
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
