"""Optional dependencies: one import helper, one error that names the extra to install.

Packages outside ``requirements.txt`` (``diffusers`` for the offline diffusion backends, ``av`` for ``.mp4``) are
imported lazily through :func:`require`, so a missing one costs nothing until it is used and then raises
:class:`MissingDependencyError` with one line saying what to install (the CLI prints it as its ``error:`` line).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingDependencyError", "require"]


class MissingDependencyError(ImportError):
    """An optional package is not installed; the message names the ``pip install`` that fixes it."""


def require(module: str, *, extra: str, purpose: str, package: str | None = None, hint: str = "") -> ModuleType:
    """Import and return ``module``, or raise :class:`MissingDependencyError` naming the extra.

    Args:
        module: import name (``"av"``, ``"diffusers"``).
        extra: the ``pyproject.toml`` extra that installs it (``pip install 'cartoonseg[extra]'``).
        purpose: what needs it, as the start of the sentence ("writing .mp4 files").
        package: the pip name when it differs from ``module``.
        hint: an extra sentence (for instance the ComfyUI node that needs no such package).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pip = package or module
        message = f"{purpose} needs the optional package '{pip}': pip install 'cartoonseg[{extra}]' (or pip install {pip})"
        raise MissingDependencyError(message + (f"; {hint}" if hint else "")) from exc
