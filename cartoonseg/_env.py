"""Settings read from environment variables: one reading of a time limit in seconds."""

from __future__ import annotations

import math
import os

__all__ = ["env_seconds"]


def env_seconds(name: str, default: float, *, upper: float = math.inf) -> float:
    """``default``, or the environment variable ``name`` when set (not empty): seconds in ``(0, upper]``.
    Anything else (not a number, NaN, zero, negative, above ``upper``) is a ``ValueError`` naming the variable."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= upper or math.isinf(value):  # NaN fails too
        allowed = "> 0" if math.isinf(upper) else f"in (0, {upper:g}]"
        raise ValueError(f"{name} must be a number of seconds {allowed}, got {text!r}")
    return value
